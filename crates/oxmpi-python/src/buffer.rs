//! Buffer specifications, parsed as mpi4py parses them: any object with the
//! buffer protocol (datatype from its format), `[buf, type]`,
//! `[buf, count, type]`, `[buf, (count, displ), type]`,
//! `[buf, count, displ, type]`, and `[None, type]` for an empty message.

use std::ffi::CStr;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use oxmpi::backend::RawBuf;
use oxmpi::datatype::Datatype;

use crate::datatype::{self, PyDatatype};

/// A buffer exported by a Python object, released when dropped.
pub struct BufView {
    view: Box<ffi::Py_buffer>,
}

// SAFETY: the Py_buffer is only read (pointer, length, format) and released
// while holding the GIL (see Drop); the exporting object stays alive because
// the view holds a reference to it.
unsafe impl Send for BufView {}
// SAFETY: as above; shared access only reads plain fields.
unsafe impl Sync for BufView {}

impl BufView {
    /// Exports `obj`'s buffer, C- or Fortran-contiguous, writable if asked.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<BufView> {
        let mut view: Box<ffi::Py_buffer> = Box::new(
            // SAFETY: Py_buffer is a plain C struct; all-zero is the state
            // PyObject_GetBuffer expects to fill.
            unsafe { std::mem::zeroed() },
        );
        let mut flags = ffi::PyBUF_ANY_CONTIGUOUS | ffi::PyBUF_FORMAT;
        if writable {
            flags |= ffi::PyBUF_WRITABLE;
        }
        // SAFETY: obj is a live object (we hold the GIL through `Bound`);
        // `view` is valid writable memory for a Py_buffer.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufView { view })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.view.buf.cast()
    }

    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    /// The struct-module format ("B" when the exporter gave none).
    pub fn format(&self) -> &str {
        if self.view.format.is_null() {
            return "B";
        }
        // SAFETY: a non-null format is a NUL-terminated string owned by the
        // exporter for the lifetime of the view.
        unsafe { CStr::from_ptr(self.view.format) }
            .to_str()
            .unwrap_or("?unknown")
    }

    pub fn raw(&self) -> RawBuf {
        RawBuf {
            ptr: self.ptr(),
            len: self.len(),
        }
    }
}

impl Drop for BufView {
    fn drop(&mut self) {
        Python::attach(|_| {
            // SAFETY: the view was filled by a successful PyObject_GetBuffer
            // and is released exactly once, with the GIL held.
            unsafe { ffi::PyBuffer_Release(&mut *self.view) }
        });
    }
}

/// A parsed message buffer.
pub struct Msg {
    pub raw: RawBuf,
    /// Number of elements of `dtype`.
    pub count: usize,
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
    /// An empty message (`None` buffer).
    fn empty(pytype: PyDatatype) -> PyResult<Msg> {
        Ok(Msg {
            raw: RawBuf::EMPTY,
            count: 0,
            dtype: pytype.get()?.clone(),
            pytype,
            packed: None,
            view: None,
        })
    }
}

fn count_arg(obj: &Bound<'_, PyAny>) -> PyResult<(Option<usize>, usize)> {
    if obj.is_none() {
        return Ok((None, 0));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        if t.len() != 2 {
            return Err(PyValueError::new_err(
                "message: expected (count, displacement)",
            ));
        }
        let c = nonneg(&t.get_item(0)?, "count")?;
        let d = nonneg(&t.get_item(1)?, "displacement")?;
        return Ok((Some(c), d));
    }
    Ok((Some(nonneg(obj, "count")?), 0))
}

fn nonneg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    let v: i64 = obj
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("message: {what} must be an integer")))?;
    if v < 0 {
        return Err(PyValueError::new_err(format!(
            "message: negative {what} {v}"
        )));
    }
    Ok(v as usize)
}

/// Parses a buffer specification. `writable` for receive buffers.
pub fn parse(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Msg> {
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = obj.cast::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    };
    let Some(items) = items else {
        if obj.is_none() {
            return Msg::empty(datatype::from_format("B")?);
        }
        let view = BufView::get(obj, writable)?;
        let pytype = datatype::from_format(view.format())?;
        return finish(view, pytype, None, 0);
    };
    let (buf, count, displ, ty) = match items.as_slice() {
        [b, t] if is_datatype_like(t) => (b, None, 0, Some(t)),
        [b, c] => {
            let (c, d) = count_arg(c)?;
            (b, c, d, None)
        }
        [b, c, t] => {
            let (c, d) = count_arg(c)?;
            (b, c, d, Some(t))
        }
        [b, c, d, t] => (
            b,
            Some(nonneg(c, "count")?),
            nonneg(d, "displacement")?,
            Some(t),
        ),
        _ => {
            return Err(PyValueError::new_err(format!(
                "message: expected a buffer or a list/tuple of 2 to 4 items, got {} items",
                items.len()
            )))
        }
    };
    if crate::comm::is_bottom(buf) {
        let pytype = match ty {
            Some(t) => datatype::from_py(t)?,
            None => return Err(PyValueError::new_err("message: BOTTOM needs a datatype")),
        };
        return crate::datatype::bottom_message(pytype, count.unwrap_or(0), writable);
    }
    if buf.is_none() {
        let pytype = match ty {
            Some(t) => datatype::from_py(t)?,
            None => datatype::from_format("B")?,
        };
        if count.unwrap_or(0) != 0 {
            return Err(PyValueError::new_err(
                "message: a None buffer can only hold zero elements",
            ));
        }
        return Msg::empty(pytype);
    }
    let view = BufView::get(buf, writable)?;
    let pytype = match ty {
        Some(t) => datatype::from_py(t)?,
        None => datatype::from_format(view.format())?,
    };
    if !pytype.get()?.is_contiguous() {
        return crate::datatype::packed_message(view, pytype, count, displ, writable);
    }
    finish(view, pytype, count, displ)
}

fn is_datatype_like(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyDatatype>() || obj.is_instance_of::<pyo3::types::PyString>()
}

fn finish(view: BufView, pytype: PyDatatype, count: Option<usize>, displ: usize) -> PyResult<Msg> {
    let dtype = pytype.get()?.clone();
    let size = dtype.size();
    let len = view.len();
    let start = displ * size;
    let count = match count {
        Some(c) => {
            if start + c * size > len {
                return Err(PyValueError::new_err(format!(
                    "message: buffer of {len} bytes is too small for {c} elements of \
                     {size} bytes at displacement {displ}"
                )));
            }
            c
        }
        None => {
            if start > len {
                return Err(PyValueError::new_err(format!(
                    "message: displacement {displ} is past the end of a {len}-byte buffer"
                )));
            }
            let avail = len - start;
            if avail % size != 0 {
                return Err(PyValueError::new_err(format!(
                    "message: buffer length {avail} is not a multiple of datatype size {size}"
                )));
            }
            avail / size
        }
    };
    let raw = RawBuf {
        // SAFETY: start <= len, checked above, so the pointer stays within
        // (or one past) the exported buffer.
        ptr: unsafe { view.ptr().add(start) },
        len: count * size,
    };
    Ok(Msg {
        raw,
        count,
        dtype,
        pytype,
        packed: None,
        view: Some(view),
    })
}
