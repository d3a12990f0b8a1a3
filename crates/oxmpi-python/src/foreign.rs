//! Buffers exported without the buffer protocol, as mpi4py accepts them:
//! DLPack (`__dlpack__` / `__dlpack_device__`) and the CUDA array
//! interface (`__cuda_array_interface__`). Each fills a `Py_buffer` that
//! holds a reference to the exporter (the DLPack capsule, or the object),
//! so `PyBuffer_Release` releases it like any other view.
//!
//! oxmpi moves data with the CPU, so the memory must be host-accessible:
//! DLPack tensors must live on the CPU (or in pinned/managed memory), and a
//! CUDA-array-interface pointer is checked to be mapped in this process
//! (mpi4py hands such pointers to a CUDA-aware MPI; oxmpi would crash on
//! device memory instead, so it refuses it).
//!
//! References: the DLPack C header (`dlpack.h`, v1.0) and the Python array
//! API's `__dlpack__` protocol; Numba's CUDA Array Interface (v3).

use std::ffi::{c_void, CStr};

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device_type: i32,
    device_id: i32,
    ndim: i32,
    dtype: DLDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

/// DLPack before 1.0 (capsule "dltensor").
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// DLPack 1.0+ (capsule "dltensor_versioned").
#[repr(C)]
struct DLManagedTensorVersioned {
    major: u32,
    minor: u32,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

const KDL_CPU: i64 = 1;
const KDL_CUDA_HOST: i64 = 3;
const KDL_ROCM_HOST: i64 = 11;
const KDL_CUDA_MANAGED: i64 = 13;
const DLPACK_READ_ONLY: u64 = 1;

/// The struct-module format of a DLPack element type (mpi4py's table).
fn dlpack_format(code: u8, bits: u8, lanes: u16) -> (&'static CStr, usize) {
    let bytes = (bits as usize).div_ceil(8);
    if lanes != 1 {
        if code == 2 && lanes == 2 {
            return match bits {
                32 => (c"Zf", 8),
                64 => (c"Zd", 16),
                128 => (c"Zg", 32),
                _ => (c"B", 1),
            };
        }
        return (c"B", 1);
    }
    let f = match (code, bits) {
        (6, 8) => c"?",
        (0, 8) => c"b",
        (0, 16) => c"h",
        (0, 32) => c"i",
        (0, 64) => c"l",
        (1, 8) => c"B",
        (1, 16) => c"H",
        (1, 32) => c"I",
        (1, 64) => c"L",
        (2, 16) => c"e",
        (2, 32) => c"f",
        (2, 64) => c"d",
        (2, 128) => c"g",
        (5, 64) => c"Zf",
        (5, 128) => c"Zd",
        _ => return (c"B", 1),
    };
    (f, bytes)
}

/// The format of a CUDA-array-interface typestr kind and item size.
fn cai_format(kind: char, itemsize: usize) -> &'static CStr {
    match (kind, itemsize) {
        ('b', 1) => c"?",
        ('i', 1) => c"b",
        ('i', 2) => c"h",
        ('i', 4) => c"i",
        ('i', 8) => c"l",
        ('u', 1) => c"B",
        ('u', 2) => c"H",
        ('u', 4) => c"I",
        ('u', 8) => c"L",
        ('f', 2) => c"e",
        ('f', 4) => c"f",
        ('f', 8) => c"d",
        ('f', 16) => c"g",
        ('c', 8) => c"Zf",
        ('c', 16) => c"Zd",
        ('c', 32) => c"Zg",
        _ => c"B",
    }
}

/// Is a shape/strides (in elements for DLPack, bytes for CAI with `unit`
/// the item size) C- or Fortran-contiguous?
fn contiguous(shape: &[i64], strides: Option<&[i64]>, unit: i64) -> bool {
    let Some(strides) = strides else {
        return true;
    };
    let check = |order: &mut dyn Iterator<Item = usize>| {
        let mut size = unit;
        for i in order {
            if shape[i] > 1 && strides[i] != size {
                return false;
            }
            size *= shape[i];
        }
        true
    };
    let n = shape.len();
    check(&mut (0..n).rev()) || check(&mut (0..n))
}

/// Fills `view` over `[buf, buf + len)`, owned by `owner`.
#[allow(clippy::too_many_arguments)]
fn fill(
    view: &mut ffi::Py_buffer,
    owner: &Bound<'_, PyAny>,
    buf: *mut c_void,
    len: usize,
    readonly: bool,
    writable: bool,
    format: &'static CStr,
    itemsize: usize,
) -> PyResult<()> {
    if readonly && writable {
        return Err(PyBufferError::new_err("buffer is not writable"));
    }
    // SAFETY: `view` is writable memory for a Py_buffer; PyBuffer_FillInfo
    // takes a new reference to `owner`, released by PyBuffer_Release.
    let rc = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            buf,
            len as ffi::Py_ssize_t,
            readonly as i32,
            ffi::PyBUF_FORMAT,
        )
    };
    if rc != 0 {
        return Err(PyErr::fetch(owner.py()));
    }
    if format != c"B" {
        // The format string is static; PyBuffer_Release never frees it.
        view.format = format.as_ptr() as *mut _;
        view.itemsize = itemsize as ffi::Py_ssize_t;
    }
    Ok(())
}

/// Tries DLPack then the CUDA array interface; None when `obj` has
/// neither.
pub fn get_buffer(
    obj: &Bound<'_, PyAny>,
    view: &mut ffi::Py_buffer,
    writable: bool,
) -> Option<PyResult<()>> {
    if obj.hasattr("__dlpack__").unwrap_or(false)
        && obj.hasattr("__dlpack_device__").unwrap_or(false)
    {
        return Some(dlpack(obj, view, writable));
    }
    if obj.hasattr("__cuda_array_interface__").unwrap_or(false) {
        return Some(cuda_array_interface(obj, view, writable));
    }
    None
}

fn dlpack(obj: &Bound<'_, PyAny>, view: &mut ffi::Py_buffer, writable: bool) -> PyResult<()> {
    let py = obj.py();
    let (device, _id): (i64, i64) = obj.call_method0("__dlpack_device__")?.extract()?;
    if ![KDL_CPU, KDL_CUDA_HOST, KDL_ROCM_HOST, KDL_CUDA_MANAGED].contains(&device) {
        return Err(PyBufferError::new_err(
            "dlpack: buffer is not CPU-accessible (oxmpi moves data with the CPU)",
        ));
    }
    let kw = PyDict::new(py);
    kw.set_item("max_version", PyTuple::new(py, [1, 0])?)?;
    kw.set_item("copy", false)?;
    let (capsule, versioned) = match obj.call_method("__dlpack__", (), Some(&kw)) {
        Ok(c) => (c, true),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => {
            (obj.call_method0("__dlpack__")?, false)
        }
        Err(e) => return Err(e),
    };
    let name = if versioned {
        c"dltensor_versioned"
    } else {
        c"dltensor"
    };
    // SAFETY: a plain check on a live object.
    if unsafe { ffi::PyCapsule_IsValid(capsule.as_ptr(), name.as_ptr()) } == 0 {
        return Err(PyBufferError::new_err("dlpack: invalid capsule object"));
    }
    // SAFETY: the capsule is valid with this name (checked above).
    let ptr = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), name.as_ptr()) };
    if ptr.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: the producer guarantees the pointer's type by the capsule's
    // name, and keeps it alive while the capsule is (we hold the capsule
    // in the view until release).
    let (tensor, readonly) = unsafe {
        if versioned {
            let m = &*(ptr as *const DLManagedTensorVersioned);
            if m.major < 1 {
                return Err(PyBufferError::new_err("dlpack: unexpected version"));
            }
            (&m.dl_tensor, m.flags & DLPACK_READ_ONLY != 0)
        } else {
            (&(*(ptr as *const DLManagedTensor)).dl_tensor, false)
        }
    };
    let ndim = tensor.ndim;
    if ndim < 0 {
        return Err(PyBufferError::new_err(
            "dlpack: number of dimensions is negative",
        ));
    }
    if ndim > 0 && tensor.shape.is_null() {
        return Err(PyBufferError::new_err("dlpack: shape is NULL"));
    }
    let shape: &[i64] = if ndim == 0 {
        &[]
    } else {
        // SAFETY: `shape` holds `ndim` entries (DLPack contract; not NULL,
        // checked above).
        unsafe { std::slice::from_raw_parts(tensor.shape, ndim as usize) }
    };
    let strides = (!tensor.strides.is_null() && ndim > 0).then(|| {
        // SAFETY: a non-NULL `strides` holds `ndim` entries (DLPack
        // contract).
        unsafe { std::slice::from_raw_parts(tensor.strides, ndim as usize) }
    });
    if shape.iter().any(|&s| s < 0) || strides.is_some_and(|s| s.iter().any(|&x| x < 0)) {
        return Err(PyBufferError::new_err("dlpack: negative shape or strides"));
    }
    if !contiguous(shape, strides, 1) {
        return Err(PyBufferError::new_err("dlpack: buffer is not contiguous"));
    }
    let dt = &tensor.dtype;
    let elems: i64 = shape.iter().product();
    let len = elems as usize * (dt.bits as usize * dt.lanes as usize).div_ceil(8);
    let (format, itemsize) = dlpack_format(dt.code, dt.bits, dt.lanes);
    let buf = (tensor.data as *mut u8).wrapping_add(tensor.byte_offset as usize);
    fill(
        view,
        &capsule,
        buf.cast(),
        len,
        readonly,
        writable,
        format,
        itemsize,
    )
}

fn cuda_array_interface(
    obj: &Bound<'_, PyAny>,
    view: &mut ffi::Py_buffer,
    writable: bool,
) -> PyResult<()> {
    let cai = obj.getattr("__cuda_array_interface__")?;
    let cai = cai.cast::<PyDict>()?;
    let item = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        cai.get_item(k)?
            .ok_or_else(|| PyBufferError::new_err(format!("__cuda_array_interface__: no '{k}'")))
    };
    let (ptr, readonly): (Option<usize>, bool) = item("data")?.extract()?;
    let typestr: String = item("typestr")?.extract()?;
    let shape: Vec<i64> = item("shape")?.extract()?;
    let strides: Option<Vec<i64>> = cai.get_item("strides")?.and_then(|s| s.extract().ok());
    if cai.get_item("mask")?.is_some_and(|m| !m.is_none()) {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: cannot handle masked arrays",
        ));
    }
    let mut chars = typestr.chars();
    let (order, kind) = (chars.next().unwrap_or('|'), chars.next().unwrap_or('u'));
    let itemsize: usize = chars.as_str().parse().unwrap_or(1);
    let native = if cfg!(target_endian = "little") {
        '<'
    } else {
        '>'
    };
    if order != '|' && order != native {
        return Err(PyBufferError::new_err(format!(
            "__cuda_array_interface__: typestr '{typestr}' with non-native byte order"
        )));
    }
    if shape.iter().any(|&s| s < 0) {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: buffer with negative size",
        ));
    }
    if !contiguous(&shape, strides.as_deref(), itemsize as i64) {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: buffer is not contiguous",
        ));
    }
    let len = shape.iter().product::<i64>() as usize * itemsize;
    let addr = ptr.unwrap_or(0);
    if len > 0 && !host_mapped(addr, len) {
        return Err(PyBufferError::new_err(
            "__cuda_array_interface__: the data is not in host memory \
             (oxmpi moves data with the CPU)",
        ));
    }
    let format = cai_format(kind, itemsize);
    fill(
        view,
        obj,
        addr as *mut c_void,
        len,
        readonly,
        writable,
        format,
        itemsize,
    )
}

/// Are the first and last bytes of `[addr, addr + len)` mapped readable in
/// this process? (`process_vm_readv` on ourselves fails with EFAULT
/// instead of faulting.)
fn host_mapped(addr: usize, len: usize) -> bool {
    [addr, addr + len - 1].iter().all(|&a| {
        let mut byte = 0u8;
        let local = libc::iovec {
            iov_base: (&mut byte as *mut u8).cast(),
            iov_len: 1,
        };
        let remote = libc::iovec {
            iov_base: a as *mut c_void,
            iov_len: 1,
        };
        // SAFETY: the local iovec covers our own byte; the kernel checks
        // the remote one and reports EFAULT rather than faulting.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        n == 1
    })
}
