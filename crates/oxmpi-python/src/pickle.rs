//! Pickled objects on the wire, serialised as `MPI.pickle` says (mpi4py's
//! `Pickle`: its `dumps`/`loads`, protocol and out-of-band threshold; dill
//! or cloudpickle can be plugged in there).
//!
//! With the standard `pickle` at protocol 5, large contiguous buffers
//! (NumPy arrays) travel out of band as separate message parts, straight
//! from the array's memory, and arrive as views into the received message,
//! so their data is never copied into or out of the pickle.
//!
//! Wire format: what `dumps` returned, or, when there are out-of-band
//! buffers, `b"OXPK" | u32 nbufs | u64 pickle_len | u64 len[nbufs] |
//! pickle | bufs...` (a pickle never starts with "OXPK"), or, while
//! `MPI.pickle` is the standard pickle, objects made of plain builtins in
//! the compact format of `compact.rs` (which every receiver decodes,
//! whatever its own `MPI.pickle`).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyDict, PyList, PyMemoryView};

use oxmpi::backend::RawBuf;

use crate::buffer::BufView;
use crate::compact;

const MAGIC: &[u8; 4] = b"OXPK";

/// The standard library's `pickle.dumps` and `pickle.loads`.
struct StdPickle {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    highest: i32,
}

static STD: PyOnceLock<StdPickle> = PyOnceLock::new();

fn std_pickle(py: Python<'_>) -> PyResult<&StdPickle> {
    STD.get_or_try_init(py, || {
        let m = py.import("pickle")?;
        Ok(StdPickle {
            dumps: m.getattr("dumps")?.unbind(),
            loads: m.getattr("loads")?.unbind(),
            highest: m.getattr("HIGHEST_PROTOCOL")?.extract()?,
        })
    })
}

/// The serialiser of object messages: `MPI.pickle`'s settings.
struct Config {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    /// None: call `dumps(obj)` without a protocol.
    protocol: Option<i32>,
    /// `protocol` as a Python int, made once.
    protocol_obj: Option<Py<PyAny>>,
    /// Buffers at least this large travel out of band.
    threshold: usize,
    /// The standard pickle at protocol 5 or more: buffers may go out of
    /// band.
    out_of_band: bool,
    /// The standard `dumps` and `loads`: plain builtins may travel in the
    /// compact format, which decodes to the same objects.
    compact: bool,
}

impl Config {
    fn new(
        py: Python<'_>,
        dumps: Py<PyAny>,
        loads: Py<PyAny>,
        protocol: Option<i32>,
        threshold: usize,
    ) -> PyResult<Config> {
        let std = std_pickle(py)?;
        // None calls dumps(obj) with pickle's default protocol, which may
        // be below 5: then nothing goes out of band.
        let effective = match protocol {
            Some(p) if p >= 0 => p,
            Some(_) => std.highest,
            None => 0,
        };
        let std_dumps = dumps.bind(py).is(std.dumps.bind(py));
        let out_of_band = std_dumps && effective >= 5;
        let compact = std_dumps && loads.bind(py).is(std.loads.bind(py)) && compact_allowed();
        Ok(Config {
            compact,
            protocol_obj: protocol
                .map(|p| p.into_pyobject(py).map(|o| o.into_any().unbind()))
                .transpose()?,
            dumps,
            loads,
            protocol,
            threshold,
            out_of_band,
        })
    }
}

static CONFIG: Mutex<Option<Arc<Config>>> = Mutex::new(None);

/// `Config::compact` of the current settings, read without the lock on
/// every send: COMPACT_UNKNOWN until the settings exist.
static COMPACT: AtomicU8 = AtomicU8::new(COMPACT_UNKNOWN);
const COMPACT_UNKNOWN: u8 = 0;
const COMPACT_ON: u8 = 1;
const COMPACT_OFF: u8 = 2;
/// `Config::threshold` of the current settings, for the compact format's
/// out-of-line `bytes`.
static THRESHOLD: AtomicUsize = AtomicUsize::new(DEFAULT_THRESHOLD);

/// Installs new settings (under the CONFIG lock).
fn install(guard: &mut Option<Arc<Config>>, cfg: Arc<Config>) {
    THRESHOLD.store(cfg.threshold, Ordering::Relaxed);
    COMPACT.store(
        if cfg.compact { COMPACT_ON } else { COMPACT_OFF },
        Ordering::Release,
    );
    *guard = Some(cfg);
}

/// Whether objects may travel in the compact format now.
fn compact_on(py: Python<'_>) -> PyResult<bool> {
    match COMPACT.load(Ordering::Acquire) {
        COMPACT_ON => Ok(true),
        COMPACT_OFF => Ok(false),
        _ => Ok(config(py)?.compact),
    }
}

/// OXMPI_COMPACT_OBJECTS=0 keeps every object message a pickle (for
/// programs that receive objects as bytes and unpickle them themselves).
fn compact_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        std::env::var("OXMPI_COMPACT_OBJECTS")
            .map(|v| !matches!(v.trim(), "0" | "false" | "no" | "off"))
            .unwrap_or(true)
    })
}

/// The current settings; the defaults (the standard pickle at its highest
/// protocol) are made once, on first use.
fn config(py: Python<'_>) -> PyResult<Arc<Config>> {
    let mut guard = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = guard.as_ref() {
        return Ok(c.clone());
    }
    let std = std_pickle(py)?;
    let cfg = Arc::new(Config::new(
        py,
        std.dumps.clone_ref(py),
        std.loads.clone_ref(py),
        Some(std.highest),
        DEFAULT_THRESHOLD,
    )?);
    install(&mut guard, cfg.clone());
    Ok(cfg)
}

/// mpi4py's default out-of-band threshold (`MPI.pickle.THRESHOLD`).
pub const DEFAULT_THRESHOLD: usize = 256 * 1024;

/// Sets the serialiser of object messages (called by `MPI.pickle`).
#[pyfunction]
pub fn set_pickle(
    py: Python<'_>,
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    protocol: Option<i32>,
    threshold: isize,
) -> PyResult<()> {
    let cfg = Config::new(py, dumps, loads, protocol, threshold.max(0) as usize)?;
    install(
        &mut CONFIG.lock().unwrap_or_else(|e| e.into_inner()),
        Arc::new(cfg),
    );
    Ok(())
}

/// `dumps(obj, protocol, buffer_callback=cb)` through vectorcall, without
/// building a keyword dict for every message.
fn dumps_with_callback<'py>(
    py: Python<'py>,
    cfg: &Config,
    obj: &Bound<'py, PyAny>,
    cb: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    static KWNAMES: PyOnceLock<Py<pyo3::types::PyTuple>> = PyOnceLock::new();
    let kwnames = KWNAMES.get_or_try_init(py, || {
        Ok::<_, PyErr>(pyo3::types::PyTuple::new(py, ["buffer_callback"])?.unbind())
    })?;
    let none = py.None();
    let protocol = cfg.protocol_obj.as_ref().unwrap_or(&none);
    let args = [obj.as_ptr(), protocol.as_ptr(), cb.as_ptr()];
    // SAFETY: `args` holds three borrowed, live object pointers (two
    // positional, one keyword named by `kwnames`); vectorcall does not keep
    // them beyond the call and returns a new reference or NULL with an
    // exception set.
    unsafe {
        let r = ffi::PyObject_Vectorcall(cfg.dumps.as_ptr(), args.as_ptr(), 2, kwnames.as_ptr());
        Bound::from_owned_ptr_or_err(py, r)
    }
}

/// An object serialised and ready to send as parts.
pub struct Pickled {
    /// What `dumps` returned (pinned); None in the compact format.
    _data: Option<BufView>,
    _header: Vec<u8>,
    _bufs: Vec<BufView>,
    /// The compact encoding and the objects its parts point into.
    _compact: Option<compact::Encoded>,
    pub parts: Vec<RawBuf>,
}

impl Pickled {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }
}

/// At most this many buffers travel out of band (each is one part of the
/// message); further ones go inside the pickle.
const OOB_MAX: usize = 64;

/// The `buffer_callback` of `pickle.dumps`: keeps large buffers out of
/// band (returns False), pinning their memory until the send completes.
#[pyclass(module = "oxmpi.MPI", name = "_OutOfBand")]
struct OutOfBand {
    bufs: Vec<BufView>,
    threshold: usize,
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
        if view.len() < self.threshold.max(1) {
            return Ok(true);
        }
        self.bufs.push(view);
        Ok(false)
    }
}

/// Serialises `obj` for a message: in the compact format when it is made
/// of plain builtins and `MPI.pickle` is the standard pickle, else by
/// `MPI.pickle`.
pub fn dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Pickled> {
    if compact_on(py)? {
        if let Some(mut enc) = compact::encode(obj, THRESHOLD.load(Ordering::Relaxed)) {
            return Ok(Pickled {
                parts: std::mem::take(&mut enc.parts),
                _data: None,
                _header: Vec::new(),
                _bufs: Vec::new(),
                _compact: Some(enc),
            });
        }
    }
    let cfg = config(py)?;
    let dumps = cfg.dumps.bind(py);
    let (data, bufs) = if cfg.out_of_band {
        let oob = Bound::new(
            py,
            OutOfBand {
                bufs: Vec::new(),
                threshold: cfg.threshold,
            },
        )?;
        let data = dumps_with_callback(py, &cfg, obj, oob.as_any())?;
        let bufs = std::mem::take(&mut oob.borrow_mut().bufs);
        (data, bufs)
    } else {
        let data = match cfg.protocol {
            Some(p) => dumps.call1((obj, p))?,
            None => dumps.call1((obj,))?,
        };
        (data, Vec::new())
    };
    let data = BufView::get(&data, false, false)?;
    let main = data.raw();
    if bufs.is_empty() {
        return Ok(Pickled {
            parts: vec![main],
            _data: Some(data),
            _header: Vec::new(),
            _bufs: bufs,
            _compact: None,
        });
    }
    let bytes_len = data.len();
    let mut header = Vec::with_capacity(16 + 8 * bufs.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(bufs.len() as u32).to_le_bytes());
    header.extend_from_slice(&(bytes_len as u64).to_le_bytes());
    for b in &bufs {
        header.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    let mut parts = Vec::with_capacity(2 + bufs.len());
    parts.push(RawBuf::from_slice(&header));
    parts.push(main);
    parts.extend(bufs.iter().map(BufView::raw));
    Ok(Pickled {
        parts,
        _data: Some(data),
        _header: header,
        _bufs: bufs,
        _compact: None,
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
    if compact::is_compact(raw) {
        return loads_compact(py, raw);
    }
    if raw.len() >= 16 && &raw[..4] == MAGIC {
        // Only the standard pickle makes out-of-band messages.
        let std_loads = std_pickle(py)?.loads.bind(py);
        let word =
            |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes")) as usize;
        let nbufs = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")) as usize;
        let hdr = 16 + 8 * nbufs;
        let bad = || pyo3::exceptions::PyValueError::new_err("corrupt pickled message");
        if raw.len() < hdr {
            return Err(bad());
        }
        let main_len = word(8);
        if hdr + main_len > raw.len() {
            return Err(bad());
        }
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
        return std_loads.call((main,), Some(&kw));
    }
    let cfg = config(py)?;
    let loads = cfg.loads.bind(py);
    if loads.is(std_pickle(py)?.loads.bind(py)) {
        return loads.call1((ba,));
    }
    // A custom loads gets a memoryview (as mpi4py hands it a buffer
    // object): it may slice or index the data, not only read it whole.
    loads.call1((PyMemoryView::from(ba)?,))
}

/// Decodes a message in the compact format. A receiver whose `MPI.pickle`
/// is not the standard one gets what its `loads` makes of the standard
/// pickle of the object, as if the sender had pickled it.
fn loads_compact<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let obj = compact::decode(py, raw)?;
    if compact_on(py)? {
        return Ok(obj);
    }
    let std = std_pickle(py)?;
    let data = std.dumps.bind(py).call1((obj, std.highest))?;
    config(py)?.loads.bind(py).call1((data,))
}

/// Unpickles from a byte slice (copies it into a bytearray first so that
/// out-of-band buffers have an owner).
pub fn loads_slice<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if compact::is_compact(data) {
        return loads_compact(py, data);
    }
    let ba = PyByteArray::new(py, data);
    // SAFETY: we hold the GIL and do not resize the bytearray while `raw`
    // is in use.
    let raw = unsafe { ba.as_bytes() };
    loads(py, ba.as_any(), raw)
}

/// Unpickles a received message, which becomes the owner of the memory
/// its out-of-band buffers (NumPy arrays) view: no copy.
pub fn loads_owned(py: Python<'_>, data: Vec<u8>) -> PyResult<Bound<'_, PyAny>> {
    if compact::is_compact(&data) {
        return loads_compact(py, &data);
    }
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
