//! Array exporters other than Python's buffer protocol, read as mpi4py
//! reads them (`asdlpack.pxi`, `ascaibuf.pxi`): DLPack (`__dlpack__`,
//! versioned and legacy capsules) and the CUDA array interface
//! (`__cuda_array_interface__`). Each yields a [`BufView`] over the
//! exporter's memory; the exporter (or its capsule) is kept alive by it.
//!
//! oxmpi moves host memory: a view whose memory lives on a device is
//! accepted here (so that `MPI.buffer` can describe it), and refused by
//! [`check_host_accessible`] before a message touches it.

use std::ffi::{c_void, CStr};

use pyo3::exceptions::{
    PyAttributeError, PyBufferError, PyRuntimeWarning, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::buffer::BufView;

// DLPack device types (dlpack.h).
pub const DL_CPU: i32 = 1;
pub const DL_CUDA: i32 = 2;
const DL_CUDA_HOST: i32 = 3;
const DL_ROCM_HOST: i32 = 11;
const DL_CUDA_MANAGED: i32 = 13;

// DLPack data type codes.
const DL_INT: u8 = 0;
const DL_UINT: u8 = 1;
const DL_FLOAT: u8 = 2;
const DL_COMPLEX: u8 = 5;
const DL_BOOL: u8 = 6;

const DLPACK_FLAG_READ_ONLY: u64 = 1;

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLDevice {
    device_type: u32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

/// `DLManagedTensor` (DLPack < 1.0, capsule name "dltensor").
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// `DLManagedTensorVersioned` (DLPack >= 1.0, "dltensor_versioned").
#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// Whether memory of this device type can be read by the CPU.
pub fn is_host_device(device: i32) -> bool {
    matches!(
        device,
        0 | DL_CPU | DL_CUDA_HOST | DL_ROCM_HOST | DL_CUDA_MANAGED
    )
}

/// mpi4py's `check_cpu_accessible`: `MPI.buffer`'s element access and
/// copies refuse device memory.
pub fn check_cpu_device(device: i32) -> PyResult<()> {
    if is_host_device(device) {
        return Ok(());
    }
    Err(PyBufferError::new_err("buffer is not CPU-accessible"))
}

/// Refuses a message buffer that oxmpi cannot read or write: memory of a
/// device (GPU) that is not mapped into this process. oxmpi is not
/// GPU-aware; an exporter that reports a device but hands out host
/// memory (as unified or fake-device arrays do) is accepted.
pub fn check_host_accessible(view: &BufView) -> PyResult<()> {
    if is_host_device(view.device) || view.len() == 0 {
        return Ok(());
    }
    let first = view.ptr() as usize;
    let last = first + view.len() - 1;
    if readable(first) && readable(last) {
        return Ok(());
    }
    Err(PyBufferError::new_err(format!(
        "message: the buffer is device memory (DLPack device type {}) that \
         this process cannot address; oxmpi moves host memory only",
        view.device
    )))
}

/// Whether the byte at `addr` is mapped readable in this process; asks
/// the kernel, which answers EFAULT instead of faulting.
fn readable(addr: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: 1,
    };
    // SAFETY: process_vm_readv only writes the one local byte we own; the
    // remote address is checked by the kernel, not dereferenced by us.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == 1
}

// ------------------------------------------------------------------ DLPack

/// mpi4py's `Py_CheckDLPackBuffer`.
pub fn has_dlpack(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("__dlpack__").unwrap_or(false)
}

/// mpi4py's `Py_GetDLPackBuffer`; `Ok(None)` when `obj` is no DLPack
/// exporter.
pub fn get_dlpack(
    obj: &Bound<'_, PyAny>,
    writable: bool,
    want_format: bool,
) -> PyResult<Option<BufView>> {
    let py = obj.py();
    let (dlpack, dlpack_device) =
        match (obj.getattr("__dlpack__"), obj.getattr("__dlpack_device__")) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) if e.is_instance_of::<PyAttributeError>(py) => {
                return Ok(None)
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
    let (device_type, _device_id) = unpack_device(&dlpack_device.call0()?)?;
    let cpu = device_type == DL_CPU as u32;

    // DLPack 1.0 first; an exporter that does not know the keywords
    // answers TypeError and is asked again the 0.x way.
    let kwargs = PyDict::new(py);
    kwargs.set_item("max_version", (1u32, 0u32))?;
    kwargs.set_item("copy", false)?;
    if !cpu {
        kwargs.set_item("stream", -1)?;
    }
    let (capsule, versioned) = match dlpack.call((), Some(&kwargs)) {
        Ok(c) => (c, true),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            let c = if cpu {
                dlpack.call0()?
            } else {
                let kw = PyDict::new(py);
                kw.set_item("stream", -1)?;
                dlpack.call((), Some(&kw))?
            };
            (c, false)
        }
        Err(e) => return Err(e),
    };
    let name: &CStr = if versioned {
        c"dltensor_versioned"
    } else {
        c"dltensor"
    };
    // SAFETY: `capsule` is a live object; IsValid accepts any object.
    if unsafe { ffi::PyCapsule_IsValid(capsule.as_ptr(), name.as_ptr()) } != 1 {
        return Err(PyBufferError::new_err("dlpack: invalid capsule object"));
    }
    // SAFETY: the capsule is valid with this name (checked above).
    let pointer = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), name.as_ptr()) };
    if pointer.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a valid "dltensor[_versioned]" capsule points to the managed
    // tensor struct of that version, which lives as long as the capsule;
    // we only read it, and keep the capsule for as long as the view lives.
    let (tensor, readonly) = unsafe {
        if versioned {
            let m = &*(pointer as *const DLManagedTensorVersioned);
            if m.version.major < 1 {
                return Err(PyBufferError::new_err("dlpack: unexpected version"));
            }
            (&m.dl_tensor, m.flags & DLPACK_FLAG_READ_ONLY != 0)
        } else {
            (&(*(pointer as *const DLManagedTensor)).dl_tensor, false)
        }
    };
    // SAFETY: shape and strides arrays hold `ndim` entries by the DLPack
    // contract (checked non-null before use).
    let (shape, strides) = unsafe { dims(tensor)? };
    if !is_contiguous(shape, strides, false) && !is_contiguous(shape, strides, true) {
        return Err(PyBufferError::new_err("dlpack: buffer is not contiguous"));
    }
    if readonly && writable {
        return Err(PyBufferError::new_err("dlpack: buffer is not writable"));
    }
    let dt = &tensor.dtype;
    let elem = (dt.bits as usize * dt.lanes as usize).div_ceil(8);
    let len = shape.iter().map(|&d| d as usize).product::<usize>() * elem;
    let ptr = (tensor.data as *mut u8).wrapping_add(tensor.byte_offset as usize);
    let (format, itemsize) = if want_format {
        dlpack_format(dt)
    } else {
        ("B", 1)
    };
    Ok(Some(BufView::foreign(
        capsule.unbind(),
        ptr,
        len,
        readonly,
        format,
        itemsize,
        device_type as i32,
    )))
}

/// `device_type, device_id = obj.__dlpack_device__()`, with Python's
/// unpacking errors.
fn unpack_device(dev: &Bound<'_, PyAny>) -> PyResult<(u32, i32)> {
    let items: Vec<Bound<'_, PyAny>> = dev
        .try_iter()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "cannot unpack non-iterable {} object",
                dev.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?
        .collect::<PyResult<_>>()?;
    if items.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "__dlpack_device__: expected 2 values to unpack, got {}",
            items.len()
        )));
    }
    Ok((items[0].extract()?, items[1].extract()?))
}

/// The tensor's shape and strides (strides empty when absent), checked as
/// mpi4py's `dlpack_check_shape` does.
///
/// # Safety
/// `t` must be a tensor whose non-null shape and strides point to `ndim`
/// values that outlive the returned slices.
unsafe fn dims(t: &DLTensor) -> PyResult<(&[i64], &[i64])> {
    if t.ndim < 0 {
        return Err(PyBufferError::new_err(
            "dlpack: number of dimensions is negative",
        ));
    }
    let n = t.ndim as usize;
    if n > 0 && t.shape.is_null() {
        return Err(PyBufferError::new_err("dlpack: shape is NULL"));
    }
    let shape: &[i64] = if n == 0 {
        &[]
    } else {
        // SAFETY: non-null, `ndim` entries by this function's contract.
        unsafe { std::slice::from_raw_parts(t.shape, n) }
    };
    if shape.iter().any(|&d| d < 0) {
        return Err(PyBufferError::new_err("dlpack: shape item is negative"));
    }
    let strides: &[i64] = if t.strides.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: as for the shape.
        unsafe { std::slice::from_raw_parts(t.strides, n) }
    };
    if strides.iter().any(|&s| s < 0) {
        return Err(PyBufferError::new_err("dlpack: strides item is negative"));
    }
    Ok((shape, strides))
}

/// mpi4py's `dlpack_is_contig`: strides in elements; no strides means
/// C order.
fn is_contiguous(shape: &[i64], strides: &[i64], fortran: bool) -> bool {
    if strides.is_empty() {
        return !fortran || shape.len() <= 1;
    }
    let mut size = 1i64;
    let order: Box<dyn Iterator<Item = usize>> = if fortran {
        Box::new(0..shape.len())
    } else {
        Box::new((0..shape.len()).rev())
    };
    for i in order {
        let dim = shape[i];
        if dim > 1 && size != strides[i] {
            return false;
        }
        size *= dim;
    }
    true
}

/// mpi4py's `dlpack_get_format` and `dlpack_get_itemsize`, for an LP64
/// platform with a 16-byte long double.
fn dlpack_format(dt: &DLDataType) -> (&'static str, usize) {
    let bits = dt.bits as usize;
    if dt.lanes != 1 {
        if dt.code == DL_FLOAT && dt.lanes == 2 {
            match bits {
                32 => return ("Zf", 8),
                64 => return ("Zd", 16),
                128 => return ("Zg", 32),
                _ => {}
            }
        }
        return ("B", 1);
    }
    let itemsize = bits.div_ceil(8);
    let fmt = match (dt.code, bits) {
        (DL_BOOL, 8) => "?",
        (DL_INT, 8) => "b",
        (DL_INT, 16) => "h",
        (DL_INT, 32) => "i",
        (DL_INT, 64) => "l",
        (DL_UINT, 8) => "B",
        (DL_UINT, 16) => "H",
        (DL_UINT, 32) => "I",
        (DL_UINT, 64) => "L",
        (DL_FLOAT, 16) => "e",
        (DL_FLOAT, 32) => "f",
        (DL_FLOAT, 64) => "d",
        (DL_FLOAT, 128) => "g",
        (DL_COMPLEX, 32) => "Ze",
        (DL_COMPLEX, 64) => "Zf",
        (DL_COMPLEX, 128) => "Zd",
        (DL_COMPLEX, 256) => "Zg",
        _ => "B",
    };
    if fmt == "B" {
        ("B", 1)
    } else {
        (fmt, itemsize)
    }
}

// ---------------------------------------------------- CUDA array interface

/// mpi4py's `Py_CheckCAIBuffer`.
pub fn has_cai(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("__cuda_array_interface__").unwrap_or(false)
}

/// A value typed as mpi4py's `cdef tuple/str/list/dict` variables are:
/// None passes, another type raises TypeError.
fn typed<'py, T: pyo3::type_object::PyTypeCheck>(
    v: Option<Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<Bound<'py, T>>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => match v.cast_into::<T>() {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(PyTypeError::new_err(format!(
                "__cuda_array_interface__: '{what}' has the wrong type ({})",
                e.into_inner()
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))),
        },
    }
}

fn none_type_error(what: &str) -> PyErr {
    PyTypeError::new_err(format!("__cuda_array_interface__: '{what}' is None"))
}

/// mpi4py's `Py_GetCAIBuffer`; `Ok(None)` when `obj` has no
/// `__cuda_array_interface__`. Malformed interfaces raise the exceptions
/// mpi4py raises (KeyError for a missing key, TypeError for a wrong type,
/// ValueError for a wrong value, BufferError for an unusable buffer).
pub fn get_cai(
    obj: &Bound<'_, PyAny>,
    writable: bool,
    want_format: bool,
) -> PyResult<Option<BufView>> {
    let py = obj.py();
    let cai = match obj.getattr("__cuda_array_interface__") {
        Ok(c) => c,
        Err(e) if e.is_instance_of::<PyAttributeError>(py) => return Ok(None),
        Err(e) => return Err(e),
    };
    let cai = typed::<PyDict>(Some(cai), "__cuda_array_interface__")?
        .ok_or_else(|| none_type_error("__cuda_array_interface__"))?;
    let get_required = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        cai.get_item(key)?
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.to_owned()))
    };
    let data = typed::<PyTuple>(Some(get_required("data")?), "data")?;
    let typestr = typed::<PyString>(Some(get_required("typestr")?), "typestr")?;
    let shape = typed::<PyTuple>(Some(get_required("shape")?), "shape")?;
    let strides = typed::<PyTuple>(cai.get_item("strides")?, "strides")?;
    let descr = typed::<PyList>(cai.get_item("descr")?, "descr")?;
    let mask = cai.get_item("mask")?;

    let data = data.ok_or_else(|| none_type_error("data"))?;
    if data.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "__cuda_array_interface__: 'data' must be (pointer, readonly), got {} items",
            data.len()
        )));
    }
    let dev_ptr = data.get_item(0)?;
    let readonly = data.get_item(1)?.is_truthy()?;
    let shape = shape.ok_or_else(|| none_type_error("shape"))?;
    let mut size: isize = 1;
    for s in shape.iter() {
        size = size.saturating_mul(s.extract::<isize>()?);
    }
    let ptr: usize = if dev_ptr.is_none() && size == 0 {
        0
    } else {
        dev_ptr.extract()?
    };
    let typestr = typestr.ok_or_else(|| none_type_error("typestr"))?;
    let ts = typestr.to_str()?;
    let mut chars = ts.chars();
    let byteorder = chars.next();
    let typekind = chars.next();
    let itemsize: usize = ts.get(2..).unwrap_or("").parse().map_err(|_| {
        PyValueError::new_err(format!("__cuda_array_interface__: bad typestr {ts:?}"))
    })?;
    if want_format {
        match byteorder {
            Some('<') if cfg!(target_endian = "little") => {}
            Some('>') if cfg!(target_endian = "big") => {}
            Some('<') | Some('>') => {
                return Err(PyBufferError::new_err(format!(
                    "__cuda_array_interface__: typestr {ts:?} with non-native byte order"
                )))
            }
            Some('|') => {}
            _ => {
                return Err(PyBufferError::new_err(format!(
                    "__cuda_array_interface__: typestr {ts:?} with unrecognized byte order"
                )))
            }
        }
    }
    if mask.is_some_and(|m| !m.is_none()) {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: cannot handle masked arrays",
        ));
    }
    if size < 0 {
        return Err(PyBufferError::new_err(format!(
            "__cuda_array_interface__: buffer with negative size (size:{size})"
        )));
    }
    if let Some(strides) = &strides {
        let shape: Vec<isize> = shape.iter().map(|s| s.extract()).collect::<PyResult<_>>()?;
        let strides: Vec<isize> = strides
            .iter()
            .map(|s| s.extract())
            .collect::<PyResult<_>>()?;
        if shape.len() != strides.len()
            || (!cai_contiguous(&shape, &strides, itemsize, false)
                && !cai_contiguous(&shape, &strides, itemsize, true))
        {
            return Err(PyBufferError::new_err(format!(
                "__cuda_array_interface__: buffer is not contiguous \
                 (shape:{shape:?}, strides:{strides:?}, itemsize:{itemsize})"
            )));
        }
    }
    if readonly && writable {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: buffer is not writable",
        ));
    }
    if let Some(descr) = descr {
        let plain = descr.len() == 1 && {
            let expect = PyTuple::new(py, ["", ts])?;
            descr.get_item(0)?.eq(expect)?
        };
        if !plain {
            PyErr::warn(
                py,
                &py.get_type::<PyRuntimeWarning>(),
                c"__cuda_array_interface__: ignoring 'descr' key",
                1,
            )?;
        }
    }
    let (format, fmt_itemsize) = if want_format {
        cai_format(typekind, itemsize)
    } else {
        ("B", 1)
    };
    Ok(Some(BufView::foreign(
        obj.clone().unbind(),
        ptr as *mut u8,
        size as usize * itemsize,
        readonly,
        format,
        fmt_itemsize,
        DL_CUDA,
    )))
}

/// mpi4py's `cuda_is_contig`: strides in bytes.
fn cai_contiguous(shape: &[isize], strides: &[isize], itemsize: usize, fortran: bool) -> bool {
    let mut size = itemsize as isize;
    let n = shape.len();
    for k in 0..n {
        let i = if fortran { k } else { n - 1 - k };
        if shape[i] > 1 && size != strides[i] {
            return false;
        }
        size *= shape[i];
    }
    true
}

/// mpi4py's `cuda_get_format`.
fn cai_format(typekind: Option<char>, itemsize: usize) -> (&'static str, usize) {
    let fmt = match (typekind, itemsize) {
        (Some('b'), 1) => "?",
        (Some('i'), 1) => "b",
        (Some('i'), 2) => "h",
        (Some('i'), 4) => "i",
        (Some('i'), 8) => "l",
        (Some('u'), 1) => "B",
        (Some('u'), 2) => "H",
        (Some('u'), 4) => "I",
        (Some('u'), 8) => "L",
        (Some('f'), 2) => "e",
        (Some('f'), 4) => "f",
        (Some('f'), 8) => "d",
        (Some('f'), 16) => "g",
        (Some('c'), 4) => "Ze",
        (Some('c'), 8) => "Zf",
        (Some('c'), 16) => "Zd",
        (Some('c'), 32) => "Zg",
        _ => "B",
    };
    if fmt == "B" {
        ("B", 1)
    } else {
        (fmt, itemsize)
    }
}
