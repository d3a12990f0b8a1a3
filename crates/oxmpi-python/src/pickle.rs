//! Pickled objects on the wire. Protocol 5 with out-of-band buffers: large
//! contiguous buffers (NumPy arrays) travel as separate message parts,
//! straight from the array's memory, and arrive as views into the received
//! bytearray, so their data is never copied into or out of the pickle.
//!
//! Wire format: a plain pickle, or, when there are out-of-band buffers,
//! `b"OXPK" | u32 nbufs | u64 pickle_len | u64 len[nbufs] | pickle | bufs...`.

use std::sync::atomic::{AtomicI32, Ordering};

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

/// Pickles `obj`.
pub fn dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Pickled> {
    let f = funcs(py)?;
    let protocol = PROTOCOL.load(Ordering::Relaxed);
    let (data, oob) = if protocol >= 5 {
        let list = PyList::empty(py);
        let kw = PyDict::new(py);
        kw.set_item("buffer_callback", list.getattr("append")?)?;
        let data = f.dumps.bind(py).call((obj, protocol), Some(&kw))?;
        (data, Some(list))
    } else {
        (f.dumps.bind(py).call1((obj, protocol))?, None)
    };
    let data: Bound<'_, PyBytes> = data.cast_into()?;
    let bytes = data.as_bytes();
    let main = RawBuf::from_slice(bytes);
    let bufs: Vec<BufView> = match oob {
        Some(l) if !l.is_empty() => l
            .iter()
            .map(|b| BufView::get(&b, false))
            .collect::<PyResult<_>>()?,
        _ => Vec::new(),
    };
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
