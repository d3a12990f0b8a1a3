//! The compact wire format of plain builtin objects: a fast path beside
//! `MPI.pickle` for the objects most messages carry.
//!
//! `None`, `bool`, `int`, `float`, `str`, `bytes`, and `tuple`, `list` and
//! `dict` of those (exact types, never subclasses) are written here in Rust
//! instead of by the C pickler: for a small message the pickler's
//! machinery (a Pickler object, its memo, its output buffer, the Python
//! call) costs several times the message itself. Anything else makes the
//! encoder give up, and the whole object goes through `MPI.pickle`.
//!
//! The decoded object is the one `pickle.loads(pickle.dumps(obj))` gives:
//!
//! * types are kept exactly (bool is not int, tuple is not list);
//! * ints of any size (two's complement bytes beyond 64 bits);
//! * floats by their bits (NaN payloads and signed zeros included);
//! * strings by their code points in CPython's own 1-, 2- or 4-byte form,
//!   so lone surrogates survive (UTF-8 could not carry them);
//! * dicts in insertion order;
//! * shared references: an object that the pickler memoizes (str, bytes,
//!   tuple, list, dict) and that appears twice is sent once and referred
//!   to afterwards, so `[a, a]` arrives as a list holding one object twice,
//!   as pickle's memo makes it. A container that contains itself
//!   (recursion) is left to pickle.
//!
//! Wire format (little-endian): `MAGIC | u32 flags | u64 inline_len |
//! inline | out`, where `inline` is one encoded value (flags: bit 0 when
//! it holds memo references) and `out` the data of the large
//! `bytes` objects that travel as separate message parts, straight from
//! the objects' memory, in the order the encoder met them. A message in
//! this format starts with a zero byte, which no pickle does (protocol 2
//! and later start with PROTO 0x80, earlier ones with an opcode, none of
//! which is zero), so a receiver tells the two apart whatever its own
//! `MPI.pickle` is.

use std::collections::HashMap;

use pyo3::ffi;
use pyo3::prelude::*;

use oxmpi::backend::RawBuf;

/// The first bytes of every message in this format; the last one is the
/// format's version.
pub const MAGIC: &[u8; 4] = b"\x00OXc";
const HEADER: usize = MAGIC.len() + 4 + 8;
/// Header flag: the encoding refers back to earlier objects.
const HAS_MEMO_REFS: u32 = 1;

/// Nesting deeper than this is left to pickle (and keeps the recursive
/// encoder and decoder far from the end of the stack).
const MAX_DEPTH: usize = 64;

/// Smaller memos are searched linearly (most messages are small).
const LINEAR_MEMO: usize = 32;

mod tag {
    pub const NONE: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    /// i64
    pub const INT: u8 = 3;
    /// u64 byte count, then the two's complement bytes
    pub const BIGINT: u8 = 4;
    /// f64 bits
    pub const FLOAT: u8 = 5;
    /// u64 code point count, then 1, 2 or 4 bytes per code point
    pub const STR1: u8 = 6;
    pub const STR2: u8 = 7;
    pub const STR4: u8 = 8;
    /// u64 length, then the bytes
    pub const BYTES: u8 = 9;
    /// u64 length; the bytes are the next run of the out-of-line data
    pub const BYTES_OUT: u8 = 10;
    /// u64 item count, then the items
    pub const TUPLE: u8 = 11;
    pub const LIST: u8 = 12;
    /// u64 item count, then key, value, key, value...
    pub const DICT: u8 = 13;
    /// u64 index into the memo of objects decoded so far
    pub const MEMO: u8 = 14;
}

/// An object in the compact format, ready to send as parts.
pub struct Encoded {
    /// Header and inline encoding (what the first part points into).
    _inline: Vec<u8>,
    /// The `bytes` objects sent out of line (kept alive with the parts).
    _out: Vec<Py<PyAny>>,
    /// `inline`, then each of `out`'s data.
    pub parts: Vec<RawBuf>,
}

/// Why the encoder gave up: the object is not plain builtins (or is too
/// deep, or refers to itself), and pickle has to take it.
struct Unsupported;

/// The encoder's state; small messages allocate nothing but `buf`.
struct Encoder {
    buf: Vec<u8>,
    /// Bytes objects at least this large travel out of line.
    out_threshold: usize,
    out: Vec<*mut ffi::PyObject>,
    /// Addresses of the memoizable objects met so far; an object's memo
    /// index is its position, in the order its encoding ended (the order
    /// the decoder makes them). The first LINEAR_MEMO are searched
    /// linearly, the rest through `memo_big`.
    memo_small: [usize; LINEAR_MEMO],
    memo_big: HashMap<usize, u64>,
    memo_len: u64,
    memo_refs: bool,
    /// Containers being encoded (ancestors of the current object).
    open: [usize; MAX_DEPTH],
    open_len: usize,
}

impl Encoder {
    fn lookup(&self, addr: usize) -> Option<u64> {
        let small = (self.memo_len as usize).min(LINEAR_MEMO);
        if let Some(i) = self.memo_small[..small].iter().position(|a| *a == addr) {
            return Some(i as u64);
        }
        self.memo_big.get(&addr).copied()
    }

    fn remember(&mut self, addr: usize) {
        let idx = self.memo_len;
        self.memo_len += 1;
        match self.memo_small.get_mut(idx as usize) {
            Some(slot) => *slot = addr,
            None => {
                self.memo_big.insert(addr, idx);
            }
        }
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn tagged(&mut self, t: u8, v: u64) {
        self.buf.push(t);
        self.u64(v);
    }

    /// Encodes `o`.
    ///
    /// # Safety
    /// `o` is a live object and the GIL is held; nothing here runs Python
    /// code, so the object graph cannot change while it is walked.
    unsafe fn value(&mut self, o: *mut ffi::PyObject, depth: usize) -> Result<(), Unsupported> {
        // SAFETY: (for the whole body) `o` is live and its type is checked
        // exactly before any type-specific access; items borrowed from
        // containers stay alive because their container does.
        unsafe {
            let t = ffi::Py_TYPE(o);
            if o == ffi::Py_None() {
                self.buf.push(tag::NONE);
                return Ok(());
            }
            if t == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
                self.buf.push(if o == ffi::Py_True() {
                    tag::TRUE
                } else {
                    tag::FALSE
                });
                return Ok(());
            }
            if t == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                return self.int(o);
            }
            if t == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
                let bits = ffi::PyFloat_AS_DOUBLE(o).to_bits();
                self.tagged(tag::FLOAT, bits);
                return Ok(());
            }
            let memoizable = t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
                || t == std::ptr::addr_of_mut!(ffi::PyBytes_Type)
                || t == std::ptr::addr_of_mut!(ffi::PyTuple_Type)
                || t == std::ptr::addr_of_mut!(ffi::PyList_Type)
                || t == std::ptr::addr_of_mut!(ffi::PyDict_Type);
            if !memoizable {
                return Err(Unsupported);
            }
            let addr = o as usize;
            if let Some(i) = self.lookup(addr) {
                self.tagged(tag::MEMO, i);
                self.memo_refs = true;
                return Ok(());
            }
            if t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                self.str(o)?;
            } else if t == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
                let n = ffi::Py_SIZE(o) as usize;
                if n >= self.out_threshold {
                    self.tagged(tag::BYTES_OUT, n as u64);
                    self.out.push(o);
                } else {
                    self.tagged(tag::BYTES, n as u64);
                    let p = ffi::PyBytes_AS_STRING(o) as *const u8;
                    self.buf.extend_from_slice(std::slice::from_raw_parts(p, n));
                }
            } else {
                // A container: an ancestor met again is recursion.
                if depth >= MAX_DEPTH || self.open[..self.open_len].contains(&addr) {
                    return Err(Unsupported);
                }
                self.open[self.open_len] = addr;
                self.open_len += 1;
                if t == std::ptr::addr_of_mut!(ffi::PyTuple_Type) {
                    let n = ffi::PyTuple_GET_SIZE(o);
                    self.tagged(tag::TUPLE, n as u64);
                    for i in 0..n {
                        self.value(ffi::PyTuple_GET_ITEM(o, i), depth + 1)?;
                    }
                } else if t == std::ptr::addr_of_mut!(ffi::PyList_Type) {
                    let n = ffi::PyList_GET_SIZE(o);
                    self.tagged(tag::LIST, n as u64);
                    for i in 0..n {
                        self.value(ffi::PyList_GET_ITEM(o, i), depth + 1)?;
                    }
                } else {
                    let n = ffi::PyDict_Size(o);
                    self.tagged(tag::DICT, n as u64);
                    let mut pos: ffi::Py_ssize_t = 0;
                    let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                    let mut v: *mut ffi::PyObject = std::ptr::null_mut();
                    while ffi::PyDict_Next(o, &mut pos, &mut k, &mut v) != 0 {
                        self.value(k, depth + 1)?;
                        self.value(v, depth + 1)?;
                    }
                }
                self.open_len -= 1;
            }
            self.remember(addr);
            Ok(())
        }
    }

    /// # Safety
    /// `o` is an exact int; the GIL is held.
    unsafe fn int(&mut self, o: *mut ffi::PyObject) -> Result<(), Unsupported> {
        // SAFETY: per the caller; the conversions below read the int only.
        unsafe {
            let mut overflow = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(o, &mut overflow);
            if overflow == 0 {
                // -1 is also the error value, but no error is possible for
                // an exact int when there is no overflow.
                self.tagged(tag::INT, v as u64);
                return Ok(());
            }
            // Two's complement, one sign bit more than the magnitude needs.
            let bits = ffi::_PyLong_NumBits(o);
            if bits == usize::MAX {
                ffi::PyErr_Clear();
                return Err(Unsupported);
            }
            let n = bits / 8 + 1;
            self.tagged(tag::BIGINT, n as u64);
            let at = self.buf.len();
            self.buf.resize(at + n, 0);
            let rc = ffi::_PyLong_AsByteArray(
                o as *mut ffi::PyLongObject,
                self.buf[at..].as_mut_ptr(),
                n,
                1,
                1,
            );
            if rc != 0 {
                ffi::PyErr_Clear();
                return Err(Unsupported);
            }
            Ok(())
        }
    }

    /// # Safety
    /// `o` is an exact str; the GIL is held.
    unsafe fn str(&mut self, o: *mut ffi::PyObject) -> Result<(), Unsupported> {
        // SAFETY: per the caller; a ready string's data holds `len` code
        // points of `kind` bytes each.
        unsafe {
            if ffi::PyUnicode_READY(o) != 0 {
                ffi::PyErr_Clear();
                return Err(Unsupported);
            }
            let len = ffi::PyUnicode_GET_LENGTH(o) as usize;
            let kind = ffi::PyUnicode_KIND(o) as usize;
            let t = match kind {
                1 => tag::STR1,
                2 => tag::STR2,
                4 => tag::STR4,
                _ => return Err(Unsupported),
            };
            self.tagged(t, len as u64);
            let data = ffi::PyUnicode_DATA(o) as *const u8;
            let raw = std::slice::from_raw_parts(data, len * kind);
            if cfg!(target_endian = "little") || kind == 1 {
                self.buf.extend_from_slice(raw);
            } else {
                for unit in raw.chunks_exact(kind) {
                    self.buf.extend(unit.iter().rev());
                }
            }
            Ok(())
        }
    }
}

/// Encodes `obj` in the compact format, or None when it is not made of
/// plain builtins only (then pickle must take it). `bytes` objects of at
/// least `out_threshold` bytes travel as separate parts.
pub fn encode(obj: &Bound<'_, PyAny>, out_threshold: usize) -> Option<Encoded> {
    let mut enc = Encoder {
        buf: Vec::with_capacity(256),
        out_threshold: out_threshold.max(1),
        out: Vec::new(),
        memo_small: [0; LINEAR_MEMO],
        memo_big: HashMap::new(),
        memo_len: 0,
        memo_refs: false,
        open: [0; MAX_DEPTH],
        open_len: 0,
    };
    enc.buf.extend_from_slice(&[0; HEADER]);
    // SAFETY: `obj` is live and we hold the GIL (it is a Bound).
    unsafe { enc.value(obj.as_ptr(), 0) }.ok()?;
    let inline_len = (enc.buf.len() - HEADER) as u64;
    let flags = if enc.memo_refs { HAS_MEMO_REFS } else { 0 };
    enc.buf[..MAGIC.len()].copy_from_slice(MAGIC);
    enc.buf[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&flags.to_le_bytes());
    enc.buf[MAGIC.len() + 4..HEADER].copy_from_slice(&inline_len.to_le_bytes());
    let py = obj.py();
    let mut parts = Vec::with_capacity(1 + enc.out.len());
    parts.push(RawBuf::from_slice(&enc.buf));
    let out: Vec<Py<PyAny>> = enc
        .out
        .iter()
        .map(|&o| {
            // SAFETY: `o` is an exact bytes object reachable from `obj`,
            // alive now; the new strong reference keeps it (and so the
            // memory its part points to) alive as long as `Encoded`.
            unsafe {
                let p = ffi::PyBytes_AS_STRING(o) as *const u8;
                let n = ffi::Py_SIZE(o) as usize;
                parts.push(RawBuf::from_slice(std::slice::from_raw_parts(p, n)));
                Bound::from_borrowed_ptr(py, o).unbind()
            }
        })
        .collect();
    Some(Encoded {
        _inline: enc.buf,
        _out: out,
        parts,
    })
}

/// Whether `data` is a message in the compact format.
pub fn is_compact(data: &[u8]) -> bool {
    data.len() >= HEADER && data[..MAGIC.len()] == MAGIC[..]
}

fn corrupt() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("corrupt object message (compact format)")
}

struct Decoder<'a, 'py> {
    py: Python<'py>,
    inline: &'a [u8],
    at: usize,
    out: &'a [u8],
    out_at: usize,
    /// Whether the encoding refers back to earlier objects: only then
    /// are they kept in `memo`.
    keep_memo: bool,
    memo: Vec<Bound<'py, PyAny>>,
}

impl<'a, 'py> Decoder<'a, 'py> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(corrupt)?;
        let inline: &'a [u8] = self.inline;
        let s = inline.get(self.at..end).ok_or_else(corrupt)?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> PyResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> PyResult<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self) -> PyResult<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt())
    }

    /// A count of items that each take at least one byte: bounded by what
    /// is left, so a corrupt count cannot make us allocate wildly.
    fn count(&mut self) -> PyResult<usize> {
        let n = self.len()?;
        if n > self.inline.len() - self.at {
            return Err(corrupt());
        }
        Ok(n)
    }

    fn owned(&self, p: *mut ffi::PyObject) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `p` is a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(self.py, p) }
    }

    fn value(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(corrupt());
        }
        let py = self.py;
        let t = self.byte()?;
        let obj = match t {
            tag::NONE => return Ok(py.None().into_bound(py)),
            tag::FALSE => return Ok(pyo3::types::PyBool::new(py, false).to_owned().into_any()),
            tag::TRUE => return Ok(pyo3::types::PyBool::new(py, true).to_owned().into_any()),
            tag::INT => {
                let v = self.u64()? as i64;
                // SAFETY: plain constructor call with the GIL held.
                return self.owned(unsafe { ffi::PyLong_FromLongLong(v) });
            }
            tag::BIGINT => {
                let n = self.len()?;
                let b = self.take(n)?;
                // SAFETY: `b` is `n` readable bytes.
                return self.owned(unsafe { ffi::_PyLong_FromByteArray(b.as_ptr(), n, 1, 1) });
            }
            tag::FLOAT => {
                let v = f64::from_bits(self.u64()?);
                // SAFETY: plain constructor call with the GIL held.
                return self.owned(unsafe { ffi::PyFloat_FromDouble(v) });
            }
            tag::STR1 | tag::STR2 | tag::STR4 => {
                let kind = match t {
                    tag::STR1 => 1,
                    tag::STR2 => 2,
                    _ => 4,
                };
                let n = self.len()?;
                let raw = self.take(n.checked_mul(kind).ok_or_else(corrupt)?)?;
                let aligned = (raw.as_ptr() as usize).is_multiple_of(kind);
                let p = if kind == 1 || (aligned && cfg!(target_endian = "little")) {
                    // SAFETY: `raw` holds `n` code units of `kind` bytes,
                    // aligned for their width; the constructor copies them.
                    unsafe {
                        ffi::PyUnicode_FromKindAndData(
                            kind as i32,
                            raw.as_ptr().cast(),
                            n as ffi::Py_ssize_t,
                        )
                    }
                } else {
                    // Unaligned in the message (or big-endian): copy into
                    // aligned native-order units first.
                    let mut units = vec![0u32; n];
                    for (u, c) in units.iter_mut().zip(raw.chunks_exact(kind)) {
                        *u = if kind == 2 {
                            u32::from(u16::from_le_bytes([c[0], c[1]]))
                        } else {
                            u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                        };
                    }
                    // SAFETY: `units` holds `n` aligned native UCS4 code
                    // points; the constructor copies (and narrows) them.
                    unsafe {
                        ffi::PyUnicode_FromKindAndData(
                            4,
                            units.as_ptr().cast(),
                            n as ffi::Py_ssize_t,
                        )
                    }
                };
                self.owned(p)?
            }
            tag::BYTES => {
                let n = self.len()?;
                let b = self.take(n)?;
                pyo3::types::PyBytes::new(py, b).into_any()
            }
            tag::BYTES_OUT => {
                let n = self.len()?;
                let end = self.out_at.checked_add(n).ok_or_else(corrupt)?;
                let out: &[u8] = self.out;
                let b = out.get(self.out_at..end).ok_or_else(corrupt)?;
                self.out_at = end;
                pyo3::types::PyBytes::new(py, b).into_any()
            }
            tag::TUPLE | tag::LIST => {
                let n = self.count()?;
                // SAFETY: a new tuple or list of `n` empty slots, each set
                // exactly once below (SET_ITEM steals the new reference);
                // on an error the partly filled container is released,
                // which both types allow (empty slots are NULL).
                unsafe {
                    let c = if t == tag::TUPLE {
                        ffi::PyTuple_New(n as ffi::Py_ssize_t)
                    } else {
                        ffi::PyList_New(n as ffi::Py_ssize_t)
                    };
                    let c = self.owned(c)?;
                    for i in 0..n {
                        let item = self.value(depth + 1)?.into_ptr();
                        if t == tag::TUPLE {
                            ffi::PyTuple_SET_ITEM(c.as_ptr(), i as ffi::Py_ssize_t, item);
                        } else {
                            ffi::PyList_SET_ITEM(c.as_ptr(), i as ffi::Py_ssize_t, item);
                        }
                    }
                    c
                }
            }
            tag::DICT => {
                let n = self.count()?;
                // SAFETY: a new dict sized for `n` items.
                let d = self.owned(unsafe { ffi::_PyDict_NewPresized(n as ffi::Py_ssize_t) })?;
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    // SAFETY: live objects; SetItem takes its own references.
                    if unsafe { ffi::PyDict_SetItem(d.as_ptr(), k.as_ptr(), v.as_ptr()) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                d
            }
            tag::MEMO => {
                let i = self.len()?;
                return self.memo.get(i).cloned().ok_or_else(corrupt);
            }
            _ => return Err(corrupt()),
        };
        if self.keep_memo {
            self.memo.push(obj.clone());
        }
        Ok(obj)
    }
}

/// Decodes a message in the compact format (see [`is_compact`]).
pub fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if !is_compact(data) {
        return Err(corrupt());
    }
    let flags = u32::from_le_bytes(
        data[MAGIC.len()..MAGIC.len() + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let inline_len = u64::from_le_bytes(data[MAGIC.len() + 4..HEADER].try_into().expect("8 bytes"));
    let inline_len = usize::try_from(inline_len).map_err(|_| corrupt())?;
    let end = HEADER.checked_add(inline_len).ok_or_else(corrupt)?;
    let inline = data.get(HEADER..end).ok_or_else(corrupt)?;
    let mut d = Decoder {
        py,
        inline,
        at: 0,
        out: &data[end..],
        out_at: 0,
        keep_memo: flags & HAS_MEMO_REFS != 0,
        memo: Vec::new(),
    };
    let obj = d.value(0)?;
    if d.at != inline.len() || d.out_at != d.out.len() {
        return Err(corrupt());
    }
    Ok(obj)
}
