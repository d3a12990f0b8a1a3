//! Pickled objects on the wire. Protocol 5 with out-of-band buffers: large
//! contiguous buffers (NumPy arrays) travel as separate message parts,
//! straight from the array's memory, and arrive as views into the received
//! bytearray, so their data is never copied into or out of the pickle.
//!
//! Wire format: a plain pickle, or, when there are out-of-band buffers,
//! `b"OXPK" | u32 nbufs | u64 pickle_len | u64 len[nbufs] | pickle | bufs...`.

use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView};

use oxmpi::backend::RawBuf;

use crate::buffer::BufView;

const MAGIC: &[u8; 4] = b"OXPK";

/// The pickle protocol (mpi4py.rc.pickle_protocol / MPI.pickle.PROTOCOL).
pub static PROTOCOL: AtomicI32 = AtomicI32::new(5);

struct Funcs {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
}

static FUNCS: PyOnceLock<Funcs> = PyOnceLock::new();

fn funcs(py: Python<'_>) -> PyResult<&Funcs> {
    FUNCS.get_or_try_init(py, || {
        let m = py.import("pickle")?;
        Ok(Funcs {
            dumps: m.getattr("dumps")?.unbind(),
            loads: m.getattr("loads")?.unbind(),
        })
    })
}

/// An object serialised and ready to send as parts.
pub struct Pickled {
    _data: Py<PyBytes>,
    _header: Vec<u8>,
    _bufs: Vec<BufView>,
    pub parts: Vec<RawBuf>,
}

impl Pickled {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }
}

/// Buffers smaller than this travel inside the pickle: below it, a
/// separate message part costs more than the copy it saves.
const OOB_THRESHOLD: usize = 64 * 1024;
/// At most this many buffers travel out of band (each is one part of the
/// message); further ones go inside the pickle.
const OOB_MAX: usize = 64;

/// The `buffer_callback` of `pickle.dumps`: keeps large buffers out of
/// band (returns False), pinning their memory until the send completes.
#[pyclass(module = "oxmpi.MPI", name = "_OutOfBand")]
struct OutOfBand {
    bufs: Vec<BufView>,
}

#[pymethods]
impl OutOfBand {
    fn __call__(&mut self, buf: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.bufs.len() >= OOB_MAX {
            return Ok(true);
        }
        let view = match BufView::get(buf, false, false) {
            Ok(v) => v,
            // Not contiguous: let pickle copy it in band.
            Err(_) => return Ok(true),
        };
        if view.len() < OOB_THRESHOLD {
            return Ok(true);
        }
        self.bufs.push(view);
        Ok(false)
    }
}

/// Pickles `obj`.
pub fn dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Pickled> {
    let f = funcs(py)?;
    let protocol = PROTOCOL.load(Ordering::Relaxed);
    let (data, bufs) = if protocol >= 5 {
        let oob = Bound::new(py, OutOfBand { bufs: Vec::new() })?;
        let kw = PyDict::new(py);
        kw.set_item("buffer_callback", &oob)?;
        let data = f.dumps.bind(py).call((obj, protocol), Some(&kw))?;
        let bufs = std::mem::take(&mut oob.borrow_mut().bufs);
        (data, bufs)
    } else {
        (f.dumps.bind(py).call1((obj, protocol))?, Vec::new())
    };
    let data: Bound<'_, PyBytes> = data.cast_into()?;
    let bytes = data.as_bytes();
    let main = RawBuf::from_slice(bytes);
    if bufs.is_empty() {
        return Ok(Pickled {
            parts: vec![main],
            _data: data.unbind(),
            _header: Vec::new(),
            _bufs: bufs,
        });
    }
    let mut header = Vec::with_capacity(16 + 8 * bufs.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(bufs.len() as u32).to_le_bytes());
    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    for b in &bufs {
        header.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    let mut parts = Vec::with_capacity(2 + bufs.len());
    parts.push(RawBuf::from_slice(&header));
    parts.push(main);
    parts.extend(bufs.iter().map(BufView::raw));
    Ok(Pickled {
        parts,
        _data: data.unbind(),
        _header: header,
        _bufs: bufs,
    })
}

/// Pickles to one contiguous byte string (for collectives on blobs).
pub fn dumps_vec(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let p = dumps(py, obj)?;
    let mut v = Vec::with_capacity(p.len());
    for part in &p.parts {
        // SAFETY: the parts point into objects `p` keeps alive.
        v.extend_from_slice(unsafe { part.as_slice() });
    }
    Ok(v)
}

/// Unpickles a received message held in `ba`.
pub fn loads<'py>(
    py: Python<'py>,
    ba: &Bound<'py, PyAny>,
    raw: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let f = funcs(py)?;
    if raw.len() >= 16 && &raw[..4] == MAGIC {
        let word =
            |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes")) as usize;
        let nbufs = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")) as usize;
        let hdr = 16 + 8 * nbufs;
        let bad = || pyo3::exceptions::PyValueError::new_err("corrupt pickled message");
        if raw.len() < hdr {
            return Err(bad());
        }
        let main_len = word(8);
        let mv = PyMemoryView::from(ba)?;
        let mut off = hdr + main_len;
        let buffers = PyList::empty(py);
        for i in 0..nbufs {
            let len = word(16 + 8 * i);
            if off + len > raw.len() {
                return Err(bad());
            }
            buffers.append(mv.get_item(pyo3::types::PySlice::new(
                py,
                off as isize,
                (off + len) as isize,
                1,
            ))?)?;
            off += len;
        }
        let main = mv.get_item(pyo3::types::PySlice::new(
            py,
            hdr as isize,
            (hdr + main_len) as isize,
            1,
        ))?;
        let kw = PyDict::new(py);
        kw.set_item("buffers", buffers)?;
        return f.loads.bind(py).call((main,), Some(&kw));
    }
    f.loads.bind(py).call1((ba,))
}

/// Unpickles from a byte slice (copies it into a bytearray first so that
/// out-of-band buffers have an owner).
pub fn loads_slice<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let ba = PyByteArray::new(py, data);
    // SAFETY: we hold the GIL and do not resize the bytearray while `raw`
    // is in use.
    let raw = unsafe { ba.as_bytes() };
    loads(py, ba.as_any(), raw)
}

/// Unpickles a received message, which becomes the owner of the memory
/// its out-of-band buffers (NumPy arrays) view: no copy.
pub fn loads_owned(py: Python<'_>, data: Vec<u8>) -> PyResult<Bound<'_, PyAny>> {
    let holder = Bound::new(py, ReceivedMessage { data })?;
    loads(py, holder.as_any(), &holder.get().data)
}

/// A received message owned by Rust, lent to Python through the buffer
/// protocol so that unpickled arrays can view it without a copy.
#[pyclass(module = "oxmpi.MPI", name = "_ReceivedMessage", frozen)]
pub struct ReceivedMessage {
    data: Vec<u8>,
}

#[pymethods]
impl ReceivedMessage {
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        // SAFETY: `view` is valid per the buffer protocol; the data never
        // moves while the object lives, and the view keeps a reference to
        // the object. Writable, as mpi4py's received arrays are: writes go
        // through the raw pointer, never through a Rust reference.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut _,
                data.len() as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
