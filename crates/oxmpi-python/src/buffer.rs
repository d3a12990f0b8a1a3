//! Buffer specifications, parsed as mpi4py parses them (`msgbuffer.pxi`):
//!
//! * any object exporting memory (buffer protocol, DLPack, CUDA array
//!   interface), its datatype inferred from its format;
//! * `[buf, type]`, `[buf, count]`, `[buf, count, type]`,
//!   `[buf, (count, displ), type]`, `[buf, count, displ, type]`, where
//!   `type` is a `Datatype` or a typecode string ("i", "f8", ...), `count`
//!   and `displ` may be None (inferred / zero), and `buf` may be None or
//!   `BOTTOM` for an empty message.
//!
//! Errors are mpi4py's: TypeError for something that is no buffer,
//! KeyError for a typecode with no MPI datatype, BufferError for a
//! read-only receive buffer or a format in non-native byte order,
//! ValueError for counts and displacements that do not fit.
//!
//! Parsing ends in [`finish`], the one place that turns (buffer, datatype,
//! count, offset) into the bytes a message moves. A datatype whose data is
//! not one dense run (holes, a resized extent, absolute addresses at
//! `BOTTOM`) is packed there into a copy that the message moves instead
//! (`datatype::packed_message`).

use std::ffi::CStr;

use pyo3::exceptions::{PyBufferError, PyKeyError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use oxmpi::backend::{RawBuf, PROC_NULL};
use oxmpi::datatype::Datatype;

use crate::datatype::{self, PyDatatype};
use crate::interop;

/// Who keeps a view's memory alive.
enum Owner {
    /// A PEP 3118 export, released with `PyBuffer_Release`.
    Python(Box<ffi::Py_buffer>),
    /// A DLPack capsule or a CUDA-array-interface exporter, held.
    Object(#[allow(dead_code)] Py<PyAny>),
    /// Nothing: memory whose lifetime someone else guarantees.
    Nothing,
}

/// Contiguous memory exported by a Python object, released when dropped.
pub struct BufView {
    ptr: *mut u8,
    len: usize,
    readonly: bool,
    itemsize: usize,
    /// Format of a foreign export; None: read it from the Python view.
    format: Option<&'static str>,
    /// 0 for the buffer protocol, else the DLPack device type (1 = CPU).
    pub device: i32,
    owner: Owner,
}

// SAFETY: the view is a description of memory plus an owner that is only
// released (see Drop) or read with the GIL held; the exporting object is
// kept alive by the owner.
unsafe impl Send for BufView {}
// SAFETY: as above; shared access only reads plain fields.
unsafe impl Sync for BufView {}

impl BufView {
    /// mpi4py's `PyMPI_GetBuffer`: the buffer protocol first, then DLPack,
    /// then the CUDA array interface; if `obj` speaks none of them, the
    /// buffer protocol's error. The memory must be contiguous (C or
    /// Fortran); `writable` refuses read-only memory; `format` asks the
    /// exporter for its element format.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool, format: bool) -> PyResult<BufView> {
        let mut flags = ffi::PyBUF_ANY_CONTIGUOUS;
        if writable {
            flags |= ffi::PyBUF_WRITABLE;
        }
        if format {
            flags |= ffi::PyBUF_FORMAT;
        }
        match Self::get_flags(obj, flags) {
            Ok(v) => Ok(v),
            Err(err) => {
                if let Some(v) = interop::get_dlpack(obj, writable, format)? {
                    return Ok(v);
                }
                if let Some(v) = interop::get_cai(obj, writable, format)? {
                    return Ok(v);
                }
                Err(err)
            }
        }
    }

    /// `PyObject_GetBuffer` with these flags.
    pub fn get_flags(obj: &Bound<'_, PyAny>, flags: i32) -> PyResult<BufView> {
        let mut view: Box<ffi::Py_buffer> = Box::new(
            // SAFETY: Py_buffer is a plain C struct; all-zero is the state
            // PyObject_GetBuffer expects to fill.
            unsafe { std::mem::zeroed() },
        );
        // SAFETY: obj is a live object (we hold the GIL through `Bound`);
        // `view` is valid writable memory for a Py_buffer.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufView {
            ptr: view.buf.cast(),
            len: view.len as usize,
            readonly: view.readonly != 0,
            itemsize: view.itemsize.max(0) as usize,
            format: None,
            device: 0,
            owner: Owner::Python(view),
        })
    }

    /// A view of memory exported through DLPack or the CUDA array
    /// interface; `owner` keeps it alive.
    pub(crate) fn foreign(
        owner: Py<PyAny>,
        ptr: *mut u8,
        len: usize,
        readonly: bool,
        format: &'static str,
        itemsize: usize,
        device: i32,
    ) -> BufView {
        BufView {
            ptr,
            len,
            readonly,
            itemsize,
            format: Some(format),
            device,
            owner: Owner::Object(owner),
        }
    }

    /// A view of memory that someone else keeps alive (`buffer.fromaddress`).
    pub(crate) fn unowned(ptr: *mut u8, len: usize, readonly: bool) -> BufView {
        BufView {
            ptr,
            len,
            readonly,
            itemsize: 1,
            format: None,
            device: 0,
            owner: Owner::Nothing,
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    pub fn itemsize(&self) -> usize {
        self.itemsize
    }

    /// The exporting object (`Py_buffer.obj`, or a foreign exporter).
    pub fn obj<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        match &self.owner {
            Owner::Python(v) if !v.obj.is_null() => {
                // SAFETY: `obj` is a strong reference held by the view.
                Some(unsafe { Bound::from_borrowed_ptr(py, v.obj) })
            }
            Owner::Object(o) => Some(o.bind(py).clone()),
            _ => None,
        }
    }

    /// The struct-module format ("B" when the exporter gave none).
    pub fn format(&self) -> &str {
        if let Some(f) = self.format {
            return f;
        }
        match &self.owner {
            Owner::Python(v) if !v.format.is_null() => {
                // SAFETY: a non-null format is a NUL-terminated string owned
                // by the exporter for the lifetime of the view.
                unsafe { CStr::from_ptr(v.format) }
                    .to_str()
                    .unwrap_or("?unknown")
            }
            _ => "B",
        }
    }

    /// The view of bytes `[start, start + len)` of this one (same owner).
    pub(crate) fn narrow(mut self, start: usize, len: usize) -> BufView {
        assert!(start + len <= self.len, "narrowed view out of range");
        // The new range lies inside the exported memory (asserted); the
        // pointer may be null for an empty export, hence no `add`.
        self.ptr = self.ptr.wrapping_add(start);
        self.len = len;
        self
    }

    pub fn raw(&self) -> RawBuf {
        RawBuf {
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl Drop for BufView {
    fn drop(&mut self) {
        if let Owner::Python(view) = &mut self.owner {
            Python::attach(|_| {
                // SAFETY: the view was filled by a successful
                // PyObject_GetBuffer and is released exactly once, with the
                // GIL held.
                unsafe { ffi::PyBuffer_Release(&mut **view) }
            });
        }
        // Owner::Object drops its reference (PyO3 defers the decref to
        // when the GIL is held).
    }
}

/// A parsed message buffer.
pub struct Msg {
    pub raw: RawBuf,
    /// Number of elements of `dtype`.
    pub count: usize,
    /// The element type (BYTE for an empty message of DATATYPE_NULL).
    pub dtype: Datatype,
    pub pytype: PyDatatype,
    /// For a non-contiguous datatype: the packed copy `raw` points at
    /// (declared before `view`, so that it unpacks into the user's memory
    /// while the view still pins it).
    #[allow(dead_code)]
    pub packed: Option<crate::datatype::Packed>,
    /// Keeps the exporter's memory alive and pinned (held, never read).
    #[allow(dead_code)]
    pub view: Option<BufView>,
}

impl Msg {
    /// The message of a send to, or receive from, PROC_NULL: nothing.
    pub fn none() -> Msg {
        let byte = byte_type();
        Msg {
            raw: RawBuf::EMPTY,
            count: 0,
            dtype: byte.get().expect("BYTE is not null").clone(),
            pytype: byte,
            packed: None,
            view: None,
        }
    }
}

fn byte_type() -> PyDatatype {
    datatype::predefined("BYTE").expect("BYTE is predefined")
}

/// Parses a point-to-point buffer specification for a message to or from
/// `peer`; as in mpi4py, nothing is parsed when `peer` is PROC_NULL.
pub fn parse_p2p(obj: &Bound<'_, PyAny>, writable: bool, peer: i32) -> PyResult<Msg> {
    if peer == PROC_NULL {
        return Ok(Msg::none());
    }
    parse(obj, writable)
}

/// Parses a buffer specification (mpi4py's `message_simple`, one block).
/// `writable` for receive buffers.
pub fn parse(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Msg> {
    parse_blocks(obj, writable, 1)
}

/// Parses the buffer of a collective that moves `blocks` equal blocks
/// (one per rank: Scatter, Alltoall, ...), as mpi4py's `message_simple`:
/// `count` is then the number of elements per block, inferred as the
/// buffer's entries divided by `blocks` (ValueError if they do not divide),
/// and `raw` spans all the blocks.
pub fn parse_blocks(obj: &Bound<'_, PyAny>, writable: bool, blocks: usize) -> PyResult<Msg> {
    let py = obj.py();
    // SAFETY: `obj` is a live object.
    let is_buffer = unsafe { ffi::PyObject_CheckBuffer(obj.as_ptr()) } != 0;
    let mut o_count: Option<Bound<'_, PyAny>> = None;
    let mut o_displ: Option<Bound<'_, PyAny>> = None;
    let mut o_type: Option<Bound<'_, PyAny>> = None;
    let o_buf: Bound<'_, PyAny>;
    if is_buffer {
        o_buf = obj.clone();
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        match items.len() {
            2 => {
                o_buf = items[0].clone();
                let second = items[1].clone();
                if is_datatype_like(&second) {
                    o_type = Some(second);
                } else if is_sequence(&second) {
                    (o_count, o_displ) = unpack_pair(&second)?;
                } else {
                    o_count = Some(second);
                }
            }
            3 => {
                o_buf = items[0].clone();
                let second = items[1].clone();
                if is_sequence(&second) {
                    (o_count, o_displ) = unpack_pair(&second)?;
                } else {
                    o_count = Some(second);
                }
                o_type = Some(items[2].clone());
            }
            4 => {
                o_buf = items[0].clone();
                o_count = Some(items[1].clone());
                o_displ = Some(items[2].clone());
                o_type = Some(items[3].clone());
            }
            _ => return Err(PyValueError::new_err("message: expecting 2 to 4 items")),
        }
    } else if interop::has_dlpack(obj) || interop::has_cai(obj) {
        o_buf = obj.clone();
    } else {
        return Err(PyTypeError::new_err(
            "message: expecting buffer or list/tuple",
        ));
    }
    // The absent values of the list forms are None, as in mpi4py.
    fn not_none(o: Option<Bound<'_, PyAny>>) -> Option<Bound<'_, PyAny>> {
        o.filter(|v| !v.is_none())
    }
    let o_count = not_none(o_count);
    let o_displ = not_none(o_displ);
    let o_type = not_none(o_type);

    // Buffer and datatype (mpi4py's `message_basic`).
    let buf_is_none = o_buf.is_none();
    let (view, pytype) = if is_bottom(&o_buf) {
        let t = match &o_type {
            Some(t) => as_datatype(t)?,
            None => return Err(cannot_map(&py.None().into_bound(py))),
        };
        (None, t)
    } else {
        let view = BufView::get(&o_buf, writable, o_type.is_none())?;
        let t = match &o_type {
            Some(t) => as_datatype(t)?,
            None => from_format(view.format())?,
        };
        (Some(view), t)
    };
    let extent = extent_of(&pytype);
    let mut length = view.as_ref().map_or(0, BufView::len);

    // Displacement, in datatype extents.
    let mut offset = 0usize;
    if let Some(d) = &o_displ {
        let displ: i64 = d.extract()?;
        if displ < 0 {
            return Err(PyValueError::new_err(format!(
                "message: negative displacement {displ}"
            )));
        }
        if displ > 0 {
            let extent = match extent {
                None => {
                    return Err(PyValueError::new_err(
                        "message: cannot handle displacement, datatype is null",
                    ))
                }
                Some(e) if e <= 0 => {
                    return Err(PyValueError::new_err(format!(
                        "message: cannot handle displacement, datatype extent {e}"
                    )))
                }
                Some(e) => e as usize,
            };
            let displ = displ as usize;
            if displ.saturating_mul(extent) > length {
                return Err(PyValueError::new_err(format!(
                    "message: displacement {displ} out of bounds, \
                     number of datatype entries {}",
                    length / extent
                )));
            }
            offset = displ * extent;
            length -= offset;
        }
    }

    // Count: given, or as many entries as fit.
    let count = match &o_count {
        Some(c) => {
            let count: i64 = c.extract()?;
            if count < 0 {
                return Err(PyValueError::new_err(format!(
                    "message: negative count {count}"
                )));
            }
            if count > 0 && buf_is_none {
                return Err(PyValueError::new_err(format!(
                    "message: buffer is None but count is {count}"
                )));
            }
            count as usize
        }
        None if length > 0 => {
            let extent = match extent {
                None => {
                    return Err(PyValueError::new_err(
                        "message: cannot infer count, datatype is null",
                    ))
                }
                Some(e) if e <= 0 => {
                    return Err(PyValueError::new_err(format!(
                        "message: cannot infer count, datatype extent {e}"
                    )))
                }
                Some(e) => e as usize,
            };
            if length % extent != 0 {
                return Err(PyValueError::new_err(format!(
                    "message: cannot infer count, buffer length {length} \
                     is not a multiple of datatype extent {extent}"
                )));
            }
            let entries = length / extent;
            if blocks > 1 && entries % blocks != 0 {
                return Err(PyValueError::new_err(format!(
                    "message: cannot infer count, number of entries {entries} \
                     is not a multiple of required number of blocks {blocks}"
                )));
            }
            entries / blocks.max(1)
        }
        None => 0,
    };
    finish(view, pytype, count, blocks.max(1), offset, writable)
}

/// The extent of one element, the stride of counts and displacements (None
/// for DATATYPE_NULL).
fn extent_of(t: &PyDatatype) -> Option<isize> {
    t.dt.as_ref().map(|d| d.extent().1)
}

/// The bytes a message of `blocks` blocks of `count` elements of `pytype`,
/// `offset` bytes into `view`, moves. With a contiguous datatype that is
/// one range of the buffer, which must hold it; any other datatype (holes,
/// extent other than size, absolute addresses with BOTTOM) is packed into
/// a copy, unpacked into the buffer when the message is dropped if it is a
/// receive (`writable`).
fn finish(
    view: Option<BufView>,
    pytype: PyDatatype,
    count: usize,
    blocks: usize,
    offset: usize,
    writable: bool,
) -> PyResult<Msg> {
    let dtype = match (&pytype.dt, count) {
        (Some(d), _) => d.clone(),
        // An empty message may name no datatype (mpi4py passes it on).
        (None, 0) => byte_type().get()?.clone(),
        (None, _) => {
            return Err(Python::attach(|py| {
                crate::errors::mpi_error(
                    py,
                    oxmpi::error::class::ERR_TYPE,
                    "invalid datatype: DATATYPE_NULL",
                )
            }))
        }
    };
    if !dtype.is_contiguous() || (view.is_none() && dtype.layout.is_some()) {
        if let Some(v) = &view {
            interop::check_host_accessible(v)?;
        }
        return datatype::packed_message(view, pytype, count, blocks, offset, writable);
    }
    let size = dtype.size();
    let nbytes = count
        .checked_mul(blocks)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "message: {blocks} x {count} entries of {size} bytes overflow the address space"
            ))
        })?;
    let raw = match &view {
        None if nbytes == 0 => RawBuf::EMPTY,
        None => {
            return Err(PyValueError::new_err(
                "message: a BOTTOM or None buffer with a nonzero count needs a \
                 datatype of absolute addresses",
            ))
        }
        Some(v) => {
            if offset + nbytes > v.len() {
                return Err(PyValueError::new_err(format!(
                    "message: {} entries of {size} bytes at byte offset \
                     {offset} do not fit a {}-byte buffer",
                    count * blocks,
                    v.len()
                )));
            }
            interop::check_host_accessible(v)?;
            RawBuf {
                // offset + nbytes <= len (checked above): the range lies
                // in the exported memory (whose pointer is null when empty).
                ptr: v.ptr().wrapping_add(offset),
                len: nbytes,
            }
        }
    };
    Ok(Msg {
        raw,
        count,
        dtype,
        pytype,
        packed: None,
        view,
    })
}

/// Parses a point-to-point buffer specification to or from `peer` and
/// drops it: the argument checks that mpi4py makes before calls oxmpi does
/// not implement (the one-sided operations of `MPI.Win`).
#[pyfunction]
pub fn _check_message(msg: &Bound<'_, PyAny>, writable: bool, peer: i32) -> PyResult<()> {
    parse_p2p(msg, writable, peer).map(drop)
}

/// `None` or `MPI.BOTTOM`: a message with no base buffer.
pub fn is_bottom(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_none() || obj.is_instance_of::<crate::memory::Bottom>()
}

fn is_datatype_like(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyDatatype>() || obj.is_instance_of::<PyString>()
}

fn is_sequence(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()
}

/// `(count, displ) = obj`, with Python's unpacking error.
#[allow(clippy::type_complexity)]
fn unpack_pair<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<(Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>)> {
    let items: Vec<Bound<'py, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    match <[_; 2]>::try_from(items) {
        Ok([c, d]) => Ok((Some(c), Some(d))),
        Err(items) => Err(PyValueError::new_err(format!(
            "message: expecting (count, displacement), got {} items",
            items.len()
        ))),
    }
}

fn cannot_map(key: &Bound<'_, PyAny>) -> PyErr {
    let repr = key
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    PyKeyError::new_err(format!("cannot map {repr} to MPI datatype"))
}

/// mpi4py's `asdatatype`: a `Datatype` as it is (DATATYPE_NULL included),
/// or a typecode looked up in the type dictionary (KeyError if unknown).
pub fn as_datatype(obj: &Bound<'_, PyAny>) -> PyResult<PyDatatype> {
    if let Ok(d) = obj.cast::<PyDatatype>() {
        return Ok(d.get().clone());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        if let Some(t) = typecode_datatype(s.to_str()?) {
            return Ok(t);
        }
    }
    Err(cannot_map(obj))
}

/// mpi4py's `getdatatype`: the datatype of a buffer's struct-module format.
/// Plain "B" (bytes, bytearray) is MPI.BYTE; a byte-order prefix must be
/// native.
pub fn from_format(format: &str) -> PyResult<PyDatatype> {
    if format == "B" {
        return Ok(byte_type());
    }
    let code = match format.as_bytes().first() {
        Some(b'@') => &format[1..],
        Some(b'<') | Some(b'>') => {
            let native = if cfg!(target_endian = "little") {
                b'<'
            } else {
                b'>'
            };
            if format.as_bytes()[0] != native {
                return Err(PyBufferError::new_err(format!(
                    "format string '{format}' with non-native byte order"
                )));
            }
            &format[1..]
        }
        _ => format,
    };
    typecode_datatype(code)
        .ok_or_else(|| PyKeyError::new_err(format!("cannot map '{code}' to MPI datatype")))
}

/// mpi4py's `TypeDict` (typemap.pxi) for an LP64 platform: PEP 3118 format
/// codes and NumPy type strings to predefined datatypes.
pub fn typecode_datatype(code: &str) -> Option<PyDatatype> {
    datatype::from_code(code)
}
