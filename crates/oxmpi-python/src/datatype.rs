//! `MPI.Datatype` (MPI-4.1 chapter 5): the predefined datatypes, derived
//! datatype constructors, their decoding (envelope and contents), packing
//! (native and external32), attributes, and the character codes that map
//! datatypes to NumPy and the buffer protocol.
//!
//! A handle's identity is its `Arc<TypeHandle>`: `MPI.Datatype(MPI.INT) ==
//! MPI.INT`, while `MPI.INT.Dup() != MPI.INT`. The layout computations live
//! in the runtime (`oxmpi::datatype::Layout`); this file keeps what MPI
//! reports about how a type was built.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use oxmpi::backend::RawBuf;
use oxmpi::datatype::{self as rt, Basic, Datatype, Layout};
use oxmpi::error::class;

use crate::attr::{self, AttrKind, Attrs};
use crate::buffer::BufView;
use crate::errors::mpi_error;
use crate::handle;

/// Combiner values (MPI_COMBINER_*), numbered as MPICH numbers them.
pub mod combiner {
    pub const NAMED: i32 = 1;
    pub const DUP: i32 = 2;
    pub const CONTIGUOUS: i32 = 3;
    pub const VECTOR: i32 = 4;
    pub const HVECTOR: i32 = 6;
    pub const INDEXED: i32 = 7;
    pub const HINDEXED: i32 = 9;
    pub const INDEXED_BLOCK: i32 = 10;
    pub const STRUCT: i32 = 12;
    pub const SUBARRAY: i32 = 13;
    pub const DARRAY: i32 = 14;
    pub const F90_REAL: i32 = 15;
    pub const F90_COMPLEX: i32 = 16;
    pub const F90_INTEGER: i32 = 17;
    pub const RESIZED: i32 = 18;
    pub const HINDEXED_BLOCK: i32 = 19;
    pub const VALUE_INDEX: i32 = 20;

    pub const ALL: &[(&str, i32)] = &[
        ("NAMED", NAMED),
        ("DUP", DUP),
        ("CONTIGUOUS", CONTIGUOUS),
        ("VECTOR", VECTOR),
        ("HVECTOR", HVECTOR),
        ("INDEXED", INDEXED),
        ("HINDEXED", HINDEXED),
        ("INDEXED_BLOCK", INDEXED_BLOCK),
        ("HINDEXED_BLOCK", HINDEXED_BLOCK),
        ("STRUCT", STRUCT),
        ("SUBARRAY", SUBARRAY),
        ("DARRAY", DARRAY),
        ("RESIZED", RESIZED),
        ("VALUE_INDEX", VALUE_INDEX),
        ("F90_INTEGER", F90_INTEGER),
        ("F90_REAL", F90_REAL),
        ("F90_COMPLEX", F90_COMPLEX),
    ];
}

/// Array orders and distributions (MPI_ORDER_*, MPI_DISTRIBUTE_*).
pub mod consts {
    pub const ORDER_C: i32 = 56;
    pub const ORDER_FORTRAN: i32 = 57;
    pub const DISTRIBUTE_BLOCK: i32 = 121;
    pub const DISTRIBUTE_CYCLIC: i32 = 122;
    pub const DISTRIBUTE_NONE: i32 = 123;
    pub const DISTRIBUTE_DFLT_DARG: i32 = -49767;
    pub const TYPECLASS_REAL: i32 = 1;
    pub const TYPECLASS_INTEGER: i32 = 2;
    pub const TYPECLASS_COMPLEX: i32 = 3;
    pub const TYPECLASS_LOGICAL: i32 = 4;
}

/// A predefined datatype: name, basic type (None: not available in oxmpi,
/// the name is DATATYPE_NULL), character code, NumPy type string, and the
/// code `tocode` gives (None: it has none).
struct Predef {
    name: &'static str,
    basic: Option<Basic>,
    typechar: &'static str,
    typestr: &'static str,
    code: Option<&'static str>,
}

macro_rules! predef {
    ($($name:literal => $basic:expr, $ch:literal, $st:literal, $code:expr;)*) => {
        &[$(Predef { name: $name, basic: $basic, typechar: $ch, typestr: $st, code: $code }),*]
    };
}

use Basic::*;
const PREDEFINED: &[Predef] = predef! {
    "PACKED" => Some(Byte), "B", "u1", Some("B");
    "BYTE" => Some(Byte), "B", "u1", Some("B");
    "AINT" => Some(I64), "p", "i8", Some("p");
    "OFFSET" => Some(I64), "p", "i8", Some("p");
    "COUNT" => Some(I64), "p", "i8", Some("p");
    "CHAR" => Some(Char), "c", "S1", Some("c");
    "WCHAR" => Some(I32), "U", "U1", Some("U");
    "SIGNED_CHAR" => Some(I8), "b", "i1", Some("b");
    "SHORT" => Some(I16), "h", "i2", Some("h");
    "INT" => Some(I32), "i", "i4", Some("i");
    "LONG" => Some(I64), "l", "i8", Some("l");
    "LONG_LONG" => Some(I64), "q", "i8", Some("q");
    "UNSIGNED_CHAR" => Some(U8), "B", "u1", Some("B");
    "UNSIGNED_SHORT" => Some(U16), "H", "u2", Some("H");
    "UNSIGNED" => Some(U32), "I", "u4", Some("I");
    "UNSIGNED_LONG" => Some(U64), "L", "u8", Some("L");
    "UNSIGNED_LONG_LONG" => Some(U64), "Q", "u8", Some("Q");
    "FLOAT" => Some(F32), "f", "f4", Some("f");
    "DOUBLE" => Some(F64), "d", "f8", Some("d");
    "LONG_DOUBLE" => Some(LongDouble), "g", "f16", Some("g");
    "C_BOOL" => Some(Bool), "?", "b1", Some("b1");
    "INT8_T" => Some(I8), "b", "i1", Some("i1");
    "INT16_T" => Some(I16), "h", "i2", Some("i2");
    "INT32_T" => Some(I32), "i", "i4", Some("i4");
    "INT64_T" => Some(I64), "l", "i8", Some("i8");
    "UINT8_T" => Some(U8), "B", "u1", Some("u1");
    "UINT16_T" => Some(U16), "H", "u2", Some("u2");
    "UINT32_T" => Some(U32), "I", "u4", Some("u4");
    "UINT64_T" => Some(U64), "L", "u8", Some("u8");
    "FLOAT16_T" => Some(F16), "e", "f2", Some("e");
    "BFLOAT16_T" => None, "", "", None;
    "C_COMPLEX" => Some(C32), "F", "c8", Some("F");
    "C_DOUBLE_COMPLEX" => Some(C64), "D", "c16", Some("D");
    "C_LONG_DOUBLE_COMPLEX" => Some(LongDoubleComplex), "G", "c32", Some("G");
    "CXX_BOOL" => Some(Bool), "?", "b1", Some("?");
    "CXX_FLOAT_COMPLEX" => Some(C32), "F", "c8", Some("F");
    "CXX_DOUBLE_COMPLEX" => Some(C64), "D", "c16", Some("D");
    "CXX_LONG_DOUBLE_COMPLEX" => Some(LongDoubleComplex), "G", "c32", Some("G");
    "SHORT_INT" => Some(ShortInt), "V", "V8", None;
    "TWOINT" => Some(TwoInt), "V", "V8", None;
    "LONG_INT" => Some(LongInt), "V", "V16", None;
    "FLOAT_INT" => Some(FloatInt), "V", "V8", None;
    "DOUBLE_INT" => Some(DoubleInt), "V", "V16", None;
    "LONG_DOUBLE_INT" => Some(LongDoubleInt), "V", "V32", None;
    "CHARACTER" => Some(Char), "c", "S1", Some("c");
    "LOGICAL" => Some(I32), "i", "i4", Some("i");
    "INTEGER" => Some(I32), "i", "i4", Some("i");
    "REAL" => Some(F32), "f", "f4", Some("f");
    "DOUBLE_PRECISION" => Some(F64), "d", "f8", Some("d");
    "COMPLEX" => Some(C32), "F", "c8", Some("F");
    "DOUBLE_COMPLEX" => Some(C64), "D", "c16", Some("D");
    "LOGICAL1" => Some(Bool), "?", "b1", Some("b1");
    "LOGICAL2" => Some(I16), "h", "i2", Some("i2");
    "LOGICAL4" => Some(I32), "i", "i4", Some("i4");
    "LOGICAL8" => Some(I64), "l", "i8", Some("i8");
    "LOGICAL16" => None, "", "", None;
    "INTEGER1" => Some(I8), "b", "i1", Some("i1");
    "INTEGER2" => Some(I16), "h", "i2", Some("i2");
    "INTEGER4" => Some(I32), "i", "i4", Some("i4");
    "INTEGER8" => Some(I64), "l", "i8", Some("i8");
    "INTEGER16" => None, "", "", None;
    "REAL2" => Some(F16), "e", "f2", Some("f2");
    "REAL4" => Some(F32), "f", "f4", Some("f4");
    "REAL8" => Some(F64), "d", "f8", Some("f8");
    "REAL16" => None, "", "", None;
    "COMPLEX4" => None, "", "", None;
    "COMPLEX8" => Some(C32), "F", "c8", Some("c8");
    "COMPLEX16" => Some(C64), "D", "c16", Some("c16");
    "COMPLEX32" => None, "", "", None;
};

/// Other names of predefined datatypes (mpi4py's aliases).
const ALIASES: &[(&str, &str)] = &[
    ("INT_INT", "TWOINT"),
    ("FLOAT32_T", "FLOAT"),
    ("FLOAT64_T", "DOUBLE"),
    ("C_FLOAT_COMPLEX", "C_COMPLEX"),
    ("UNSIGNED_INT", "UNSIGNED"),
    ("SIGNED_SHORT", "SHORT"),
    ("SIGNED_INT", "INT"),
    ("SIGNED_LONG", "LONG"),
    ("SIGNED_LONG_LONG", "LONG_LONG"),
    ("BOOL", "C_BOOL"),
    ("SINT8_T", "INT8_T"),
    ("SINT16_T", "INT16_T"),
    ("SINT32_T", "INT32_T"),
    ("SINT64_T", "INT64_T"),
    ("F_BOOL", "LOGICAL"),
    ("F_INT", "INTEGER"),
    ("F_FLOAT", "REAL"),
    ("F_DOUBLE", "DOUBLE_PRECISION"),
    ("F_COMPLEX", "COMPLEX"),
    ("F_FLOAT_COMPLEX", "COMPLEX"),
    ("F_DOUBLE_COMPLEX", "DOUBLE_COMPLEX"),
];

/// Character codes and type strings to predefined datatypes (`fromcode`).
const CODES: &[(&str, &str)] = &[
    ("?", "C_BOOL"),
    ("b", "SIGNED_CHAR"),
    ("h", "SHORT"),
    ("i", "INT"),
    ("l", "LONG"),
    ("q", "LONG_LONG"),
    ("B", "UNSIGNED_CHAR"),
    ("H", "UNSIGNED_SHORT"),
    ("I", "UNSIGNED"),
    ("L", "UNSIGNED_LONG"),
    ("Q", "UNSIGNED_LONG_LONG"),
    ("e", "FLOAT16_T"),
    ("f", "FLOAT"),
    ("d", "DOUBLE"),
    ("g", "LONG_DOUBLE"),
    ("Zf", "C_COMPLEX"),
    ("Zd", "C_DOUBLE_COMPLEX"),
    ("Zg", "C_LONG_DOUBLE_COMPLEX"),
    ("F", "C_COMPLEX"),
    ("D", "C_DOUBLE_COMPLEX"),
    ("G", "C_LONG_DOUBLE_COMPLEX"),
    ("i1", "INT8_T"),
    ("i2", "INT16_T"),
    ("i4", "INT32_T"),
    ("i8", "INT64_T"),
    ("u1", "UINT8_T"),
    ("u2", "UINT16_T"),
    ("u4", "UINT32_T"),
    ("u8", "UINT64_T"),
    ("f2", "FLOAT16_T"),
    ("f4", "FLOAT"),
    ("f8", "DOUBLE"),
    ("f16", "LONG_DOUBLE"),
    ("c8", "C_COMPLEX"),
    ("c16", "C_DOUBLE_COMPLEX"),
    ("c32", "C_LONG_DOUBLE_COMPLEX"),
    ("b1", "C_BOOL"),
    ("n", "COUNT"),
    ("N", "UNSIGNED_LONG"),
    ("p", "AINT"),
    ("P", "UNSIGNED_LONG"),
    ("c", "CHAR"),
    ("a", "CHAR"),
    ("S", "CHAR"),
    ("S1", "CHAR"),
    ("s", "CHAR"),
    ("1s", "CHAR"),
    ("U", "WCHAR"),
    ("U1", "WCHAR"),
    ("u", "UINT16_T"),
    ("1u", "UINT16_T"),
    ("w", "WCHAR"),
    ("1w", "WCHAR"),
    ("M", "INT64_T"),
    ("M8", "INT64_T"),
    ("m", "INT64_T"),
    ("m8", "INT64_T"),
];

/// How a datatype was made, as Get_envelope/Get_contents report it (the
/// large-count convention of MPI-4: counts and displacements in `counts`).
#[derive(Clone)]
pub struct Contents {
    pub combiner: i32,
    pub ints: Vec<i64>,
    pub addrs: Vec<i64>,
    pub counts: Vec<i64>,
    pub types: Vec<PyDatatype>,
}

/// Get_contents: (integers, addresses, counts, datatypes).
type ContentsTuple = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<PyDatatype>);

/// A datatype handle: the layout, and what MPI keeps about the type.
pub struct TypeHandle {
    pub dt: Datatype,
    named: Option<&'static Predef>,
    contents: Option<Contents>,
    name: Mutex<String>,
    attrs: Mutex<Attrs>,
}

/// An MPI datatype (DATATYPE_NULL when `dt` is None). The object is
/// immutable except that Free turns it into DATATYPE_NULL.
#[pyclass(module = "oxmpi.MPI", name = "Datatype", subclass, weakref, frozen)]
pub struct PyDatatype {
    /// None for DATATYPE_NULL.
    pub dt: Option<Datatype>,
    pub h: Option<Arc<TypeHandle>>,
    freed: AtomicBool,
}

impl Clone for PyDatatype {
    fn clone(&self) -> Self {
        if self.is_null() {
            return null_datatype();
        }
        PyDatatype {
            dt: self.dt.clone(),
            h: self.h.clone(),
            freed: AtomicBool::new(false),
        }
    }
}

fn type_error(msg: &str) -> PyErr {
    Python::attach(|py| mpi_error(py, class::ERR_TYPE, msg))
}

fn arg_error(code: i32, msg: &str) -> PyErr {
    Python::attach(|py| mpi_error(py, code, msg))
}

fn predefined_table() -> &'static HashMap<&'static str, Arc<TypeHandle>> {
    static T: OnceLock<HashMap<&'static str, Arc<TypeHandle>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut m = HashMap::new();
        for p in PREDEFINED {
            if let Some(b) = p.basic {
                m.insert(
                    p.name,
                    Arc::new(TypeHandle {
                        dt: Datatype::new(b),
                        named: Some(p),
                        contents: None,
                        name: Mutex::new(format!(
                            "MPI_{}",
                            if p.name == "TWOINT" { "2INT" } else { p.name }
                        )),
                        attrs: Mutex::new(Attrs::default()),
                    }),
                );
            }
        }
        m
    })
}

/// The predefined datatype called `name` (None if unknown or not
/// available in oxmpi).
pub fn predefined(name: &str) -> Option<PyDatatype> {
    let name = ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, n)| n);
    predefined_table().get(name).map(|h| PyDatatype {
        dt: Some(h.dt.clone()),
        h: Some(h.clone()),
        freed: AtomicBool::new(false),
    })
}

fn null_datatype() -> PyDatatype {
    PyDatatype {
        dt: None,
        h: None,
        freed: AtomicBool::new(false),
    }
}

impl PyDatatype {
    fn is_null(&self) -> bool {
        self.dt.is_none() || self.freed.load(Ordering::Relaxed)
    }

    /// The runtime datatype; ERR_TYPE for DATATYPE_NULL.
    pub fn get(&self) -> PyResult<&Datatype> {
        if self.is_null() {
            return Err(type_error("invalid datatype: DATATYPE_NULL"));
        }
        Ok(self.dt.as_ref().expect("not null"))
    }

    /// Whether two objects name the same datatype handle (mpi4py compares
    /// datatypes of a reduction's send and receive buffers so).
    pub fn same_handle(&self, other: &PyDatatype) -> bool {
        handle::same(self.h.as_ref(), other.h.as_ref())
    }

    pub fn handle(&self) -> PyResult<&Arc<TypeHandle>> {
        if self.is_null() {
            return Err(type_error("invalid datatype: DATATYPE_NULL"));
        }
        Ok(self.h.as_ref().expect("not null"))
    }

    /// A new derived datatype.
    fn derived(layout: Layout, contents: Contents) -> PyDatatype {
        let dt = Datatype::derived(layout);
        PyDatatype {
            dt: Some(dt.clone()),
            h: Some(Arc::new(TypeHandle {
                dt,
                named: None,
                contents: Some(contents),
                name: Mutex::new(String::new()),
                attrs: Mutex::new(Attrs::default()),
            })),
            freed: AtomicBool::new(false),
        }
    }

    /// A predefined-like type with contents (Fortran parametrized types):
    /// a basic type, reported through its combiner.
    fn parametrized(basic: Basic, contents: Contents) -> PyDatatype {
        let dt = Datatype::new(basic);
        PyDatatype {
            dt: Some(dt.clone()),
            h: Some(Arc::new(TypeHandle {
                dt,
                named: None,
                contents: Some(contents),
                name: Mutex::new(String::new()),
                attrs: Mutex::new(Attrs::default()),
            })),
            freed: AtomicBool::new(false),
        }
    }

    pub fn layout(&self) -> PyResult<Arc<Layout>> {
        Ok(self.get()?.layout())
    }

    fn combiner(&self) -> PyResult<i32> {
        let h = self.handle()?;
        Ok(h.contents.as_ref().map_or(combiner::NAMED, |c| c.combiner))
    }

    /// Size of the basic elements of a Fortran parametrized type.
    fn fortran_kind(&self) -> Option<char> {
        let c = self.h.as_ref()?.contents.as_ref()?;
        match c.combiner {
            combiner::F90_INTEGER => Some('i'),
            combiner::F90_REAL => Some('f'),
            combiner::F90_COMPLEX => Some('c'),
            _ => None,
        }
    }

    /// The base type of a DUP.
    fn dup_base(&self) -> Option<&PyDatatype> {
        let c = self.h.as_ref()?.contents.as_ref()?;
        (c.combiner == combiner::DUP).then(|| &c.types[0])
    }

    fn typechar_str(&self) -> String {
        if self.is_null() {
            return String::new();
        }
        if let Some(b) = self.dup_base() {
            return b.typechar_str();
        }
        let h = self.h.as_ref().expect("not null");
        if let Some(p) = h.named {
            return p.typechar.to_owned();
        }
        if let Some(k) = self.fortran_kind() {
            return typechr(k, h.dt.size()).unwrap_or("V").to_owned();
        }
        "V".to_owned()
    }

    fn typestr_str(&self) -> String {
        if self.is_null() {
            return String::new();
        }
        if let Some(b) = self.dup_base() {
            return b.typestr_str();
        }
        let h = self.h.as_ref().expect("not null");
        if let Some(p) = h.named {
            return p.typestr.to_owned();
        }
        if let Some(k) = self.fortran_kind() {
            return format!("{k}{}", h.dt.size());
        }
        format!("V{}", h.dt.extent().1)
    }

    fn code(&self) -> Option<String> {
        if self.is_null() {
            return None;
        }
        if let Some(b) = self.dup_base() {
            return b.code();
        }
        let h = self.h.as_ref().expect("not null");
        if let Some(p) = h.named {
            return p.code.map(str::to_owned);
        }
        self.fortran_kind().map(|k| format!("{k}{}", h.dt.size()))
    }
}

/// The NumPy character code of a `kind` ('i', 'f', 'c') of `size` bytes.
fn typechr(kind: char, size: usize) -> Option<&'static str> {
    Some(match (kind, size) {
        ('i', 1) => "b",
        ('i', 2) => "h",
        ('i', 4) => "i",
        ('i', 8) => "l",
        ('f', 2) => "e",
        ('f', 4) => "f",
        ('f', 8) => "d",
        ('f', 16) => "g",
        ('c', 8) => "F",
        ('c', 16) => "D",
        ('c', 32) => "G",
        _ => return None,
    })
}

/// Alignment of a character code.
fn typealign(code: &str) -> usize {
    match code.chars().next() {
        Some('?' | 'b' | 'B' | 'c' | 'S') => 1,
        Some('h' | 'H' | 'e' | 'E') => 2,
        Some('i' | 'I' | 'f' | 'F' | 'U') => 4,
        Some('l' | 'L' | 'q' | 'Q' | 'd' | 'D' | 'p' | 'P') => 8,
        Some('g' | 'G') => 16,
        _ => 0,
    }
}

fn nonneg(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| arg_error(class::ERR_COUNT, &format!("negative {what} {v}")))
}

fn rt_err(e: oxmpi::Error) -> PyErr {
    crate::errors::to_pyerr(e)
}

fn seq_i64(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err("expected a sequence of integers"))?
        .map(|x| x?.extract::<i64>())
        .collect()
}

fn check_len(v: &[i64], n: usize, what: &str) -> PyResult<()> {
    if v.len() != n {
        return Err(PyValueError::new_err(format!(
            "expecting {n} items, got {} ({what})",
            v.len()
        )));
    }
    Ok(())
}

fn types_arg(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<PyDatatype>> {
    let v: Vec<PyDatatype> = obj
        .try_iter()
        .map_err(|_| PyTypeError::new_err("expected a sequence of datatypes"))?
        .map(|x| {
            let x = x?;
            let d = x
                .cast::<PyDatatype>()
                .map_err(|_| PyTypeError::new_err("expected a Datatype"))?;
            Ok(d.get().clone())
        })
        .collect::<PyResult<_>>()?;
    if v.len() != n {
        return Err(PyValueError::new_err(format!(
            "expecting {n} items, got {} (datatypes)",
            v.len()
        )));
    }
    Ok(v)
}

/// The subarray layout (MPI-4.1 §5.1.3): nested vectors placed at the
/// start offset, resized to the whole array.
fn subarray_layout(
    sizes: &[i64],
    subsizes: &[i64],
    starts: &[i64],
    order: i32,
    old: &Arc<Layout>,
) -> PyResult<Layout> {
    let n = sizes.len();
    for i in 0..n {
        if sizes[i] <= 0 || subsizes[i] <= 0 || starts[i] < 0 || starts[i] + subsizes[i] > sizes[i]
        {
            return Err(arg_error(
                class::ERR_ARG,
                &format!(
                    "invalid subarray: size {}, subsize {}, start {} in dimension {i}",
                    sizes[i], subsizes[i], starts[i]
                ),
            ));
        }
    }
    // Dimensions from fastest to slowest varying.
    let dims: Vec<usize> = match order {
        consts::ORDER_C => (0..n).rev().collect(),
        consts::ORDER_FORTRAN => (0..n).collect(),
        _ => return Err(arg_error(class::ERR_ARG, &format!("invalid order {order}"))),
    };
    let ext = old.extent();
    let mut t = old.clone();
    let mut stride = ext;
    let mut disp = 0isize;
    for (k, &d) in dims.iter().enumerate() {
        t = Arc::new(if k == 0 {
            Layout::contiguous(subsizes[d] as usize, t).map_err(rt_err)?
        } else {
            Layout::hvector(subsizes[d] as usize, 1, stride, t).map_err(rt_err)?
        });
        disp += starts[d] as isize * stride;
        stride *= sizes[d] as isize;
    }
    let placed = Arc::new(Layout::hindexed(vec![(1, disp)], t).map_err(rt_err)?);
    Ok(Layout::resized(placed, 0, stride))
}

/// The distributed-array layout (MPI-4.1 §5.1.4), as ROMIO builds it.
#[allow(clippy::too_many_arguments)]
fn darray_layout(
    size: i64,
    rank: i64,
    gsizes: &[i64],
    distribs: &[i64],
    dargs: &[i64],
    psizes: &[i64],
    order: i32,
    old: &Arc<Layout>,
) -> PyResult<Layout> {
    let n = gsizes.len();
    let bad = |m: String| Err(arg_error(class::ERR_ARG, &m));
    if psizes.iter().product::<i64>() != size || rank < 0 || rank >= size {
        return bad(format!(
            "process grid {psizes:?} does not hold rank {rank} of {size}"
        ));
    }
    // Process coordinates: row-major in the grid whatever the order.
    let mut coords = vec![0i64; n];
    let (mut procs, mut r) = (size, rank);
    for i in 0..n {
        procs /= psizes[i];
        coords[i] = r / procs;
        r %= procs;
    }
    let ext = old.extent();
    let dims: Vec<usize> = match order {
        consts::ORDER_C => (0..n).rev().collect(),
        consts::ORDER_FORTRAN => (0..n).collect(),
        _ => return bad(format!("invalid order {order}")),
    };
    let mut t = old.clone();
    let mut offsets = vec![0i64; n];
    // Bytes between consecutive elements of dimension d in the global array.
    let mut stride = ext;
    for (k, &d) in dims.iter().enumerate() {
        let (g, np, c) = (gsizes[d], psizes[d], coords[d]);
        let first = k == 0;
        let (new, off) = match distribs[d] as i32 {
            consts::DISTRIBUTE_BLOCK | consts::DISTRIBUTE_NONE => {
                let (np, c) = if distribs[d] as i32 == consts::DISTRIBUTE_NONE {
                    (1, 0)
                } else {
                    (np, c)
                };
                let blk = if dargs[d] as i32 == consts::DISTRIBUTE_DFLT_DARG {
                    (g + np - 1) / np
                } else {
                    dargs[d]
                };
                if blk <= 0 || blk * np < g {
                    return bad(format!("block size {blk} too small for {g} elements"));
                }
                let mine = (g - blk * c).clamp(0, blk) as usize;
                let l = if first {
                    Layout::contiguous(mine, t).map_err(rt_err)?
                } else {
                    Layout::hvector(mine, 1, stride, t).map_err(rt_err)?
                };
                (l, if mine == 0 { 0 } else { blk * c })
            }
            consts::DISTRIBUTE_CYCLIC => {
                let blk = if dargs[d] as i32 == consts::DISTRIBUTE_DFLT_DARG {
                    1
                } else {
                    dargs[d]
                };
                if blk <= 0 {
                    return bad(format!("invalid cyclic block size {blk}"));
                }
                let st = c * blk;
                let local = if g - 1 < st {
                    0
                } else {
                    let span = g - st;
                    (span / (np * blk)) * blk + (span % (np * blk)).min(blk)
                };
                let (count, rem) = ((local / blk) as usize, (local % blk) as usize);
                let step = np as isize * blk as isize * stride;
                let mut l =
                    Layout::hvector(count, blk as usize, step, t.clone()).map_err(rt_err)?;
                if rem > 0 {
                    l = Layout::strukt(vec![(1, 0, Arc::new(l)), (rem, count as isize * step, t)])
                        .map_err(rt_err)?;
                }
                if first {
                    l = Layout::resized(Arc::new(l), 0, g as isize * ext);
                }
                (l, if local == 0 { 0 } else { st })
            }
            other => return bad(format!("invalid distribution {other}")),
        };
        t = Arc::new(new);
        offsets[d] = off;
        stride *= g as isize;
    }
    let mut disp = 0isize;
    let mut scale = ext;
    for &d in &dims {
        disp += offsets[d] as isize * scale;
        scale *= gsizes[d] as isize;
    }
    let placed = Arc::new(Layout::hindexed(vec![(1, disp)], t).map_err(rt_err)?);
    Ok(Layout::resized(placed, 0, scale))
}

impl PyDatatype {
    fn contents_of(
        &self,
        c: i32,
        ints: Vec<i64>,
        counts: Vec<i64>,
        types: Vec<PyDatatype>,
    ) -> Contents {
        Contents {
            combiner: c,
            ints,
            addrs: Vec::new(),
            counts,
            types,
        }
    }
}

#[pymethods]
impl PyDatatype {
    #[new]
    #[pyo3(signature = (datatype=None))]
    fn new(datatype: Option<&Bound<'_, PyDatatype>>) -> PyDatatype {
        match datatype {
            Some(d) => d.get().clone(),
            None => null_datatype(),
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.get();
        let same = other.cast::<PyDatatype>().ok().map(|o| {
            let o = o.get();
            match (me.is_null(), o.is_null()) {
                (true, true) => true,
                (false, false) => handle::same(me.h.as_ref(), o.h.as_ref()),
                _ => false,
            }
        });
        handle::richcmp(slf.as_any(), same, op)
    }

    fn __hash__(&self) -> usize {
        if self.is_null() {
            return 0;
        }
        self.h.as_ref().map_or(0, |h| Arc::as_ptr(h) as usize)
    }

    fn __bool__(&self) -> bool {
        !self.is_null()
    }

    fn __repr__(&self) -> String {
        if self.is_null() {
            return "<oxmpi.MPI.Datatype MPI_DATATYPE_NULL>".into();
        }
        let name = self.Get_name();
        if name.is_empty() {
            format!("<oxmpi.MPI.Datatype object at {:#x}>", self.__hash__())
        } else {
            format!("<oxmpi.MPI.Datatype {name}>")
        }
    }

    /// Named datatypes pickle by name; others as the constructor call that
    /// rebuilds them (mpi4py's `_datatype_create`).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        if me.is_null() {
            return handle::reduce(slf.as_any(), Some("DATATYPE_NULL"));
        }
        let h = me.handle()?;
        if let Some(p) = h.named {
            // An alias pickles under the name of its object in the module.
            let m = py.import("oxmpi.MPI")?;
            let canonical = [
                p.name,
                "INT_INT",
                "FLOAT32_T",
                "FLOAT64_T",
                "C_FLOAT_COMPLEX",
            ]
            .into_iter()
            .find(|n| m.getattr(*n).is_ok_and(|o| o.is(slf)))
            .unwrap_or(p.name);
            return handle::reduce(slf.as_any(), Some(canonical));
        }
        let (base, comb, params) = PyDatatype::decode(slf)?;
        let f = py.import("oxmpi._oxmpi")?.getattr("_datatype_create")?;
        let args = PyTuple::new(
            py,
            [
                base,
                comb.into_pyobject(py)?.into_any().unbind(),
                params.into_any().unbind(),
                true.into_pyobject(py)?.to_owned().into_any().unbind(),
            ],
        )?;
        Ok(PyTuple::new(py, [f.unbind(), args.into_any().unbind()])?.into_any())
    }

    // ----------------------------------------------------------- queries

    fn Get_size(&self) -> PyResult<usize> {
        Ok(self.get()?.size())
    }

    #[getter]
    fn size(&self) -> PyResult<usize> {
        self.Get_size()
    }

    fn Get_extent(&self) -> PyResult<(isize, isize)> {
        Ok(self.get()?.extent())
    }

    #[getter]
    fn extent(&self) -> PyResult<isize> {
        Ok(self.get()?.extent().1)
    }

    #[getter]
    fn lb(&self) -> PyResult<isize> {
        Ok(self.get()?.extent().0)
    }

    #[getter]
    fn ub(&self) -> PyResult<isize> {
        let (lb, ext) = self.get()?.extent();
        Ok(lb + ext)
    }

    fn Get_true_extent(&self) -> PyResult<(isize, isize)> {
        Ok(self.get()?.true_extent())
    }

    #[getter]
    fn true_extent(&self) -> PyResult<isize> {
        Ok(self.get()?.true_extent().1)
    }

    #[getter]
    fn true_lb(&self) -> PyResult<isize> {
        Ok(self.get()?.true_extent().0)
    }

    #[getter]
    fn true_ub(&self) -> PyResult<isize> {
        let (lb, ext) = self.get()?.true_extent();
        Ok(lb + ext)
    }

    fn Get_name(&self) -> String {
        if self.is_null() {
            return "MPI_DATATYPE_NULL".into();
        }
        self.h
            .as_ref()
            .map(|h| h.name.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    fn Set_name(&self, name: &str) -> PyResult<()> {
        *self
            .handle()?
            .name
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = name.to_owned();
        Ok(())
    }

    #[getter(name)]
    fn name_prop(&self) -> String {
        self.Get_name()
    }

    #[setter(name)]
    fn set_name_prop(&self, name: &str) -> PyResult<()> {
        self.Set_name(name)
    }

    #[getter]
    fn typechar(&self) -> String {
        self.typechar_str()
    }

    #[getter]
    fn typestr(&self) -> String {
        self.typestr_str()
    }

    fn tocode(&self) -> PyResult<String> {
        self.code()
            .ok_or_else(|| PyValueError::new_err("cannot map to character code or type string"))
    }

    #[classmethod]
    fn fromcode(cls: &Bound<'_, PyType>, code: &str) -> PyResult<Py<PyAny>> {
        let name = CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, n)| *n)
            .ok_or_else(|| {
                PyValueError::new_err(format!("cannot map code {code:?} to MPI datatype"))
            })?;
        Ok(cls.py().import("oxmpi.MPI")?.getattr(name)?.unbind())
    }

    // ------------------------------------------------------ constructors

    fn Dup(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let h = me.handle()?;
        let snapshot = h
            .attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(py);
        let copied = snapshot.copied(py, slf.as_any())?;
        let contents = me.contents_of(combiner::DUP, vec![], vec![], vec![me.clone()]);
        let d = match &h.dt.layout {
            // Same data and the very same bounds (a padded struct too).
            Some(l) => PyDatatype::derived(Layout::resized(l.clone(), l.lb, l.extent()), contents),
            None => PyDatatype::parametrized(h.dt.basic, contents),
        };
        *d.handle()?.attrs.lock().unwrap_or_else(|e| e.into_inner()) = copied;
        Ok(Py::new(py, d)?.into_any())
    }

    fn Create_dup(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        PyDatatype::Dup(slf)
    }

    fn Create_contiguous(&self, count: i64) -> PyResult<PyDatatype> {
        let n = nonneg(count, "count")?;
        let l = Layout::contiguous(n, self.layout()?).map_err(rt_err)?;
        Ok(PyDatatype::derived(
            l,
            self.contents_of(
                combiner::CONTIGUOUS,
                vec![],
                vec![count],
                vec![self.clone()],
            ),
        ))
    }

    fn Create_vector(&self, count: i64, blocklength: i64, stride: i64) -> PyResult<PyDatatype> {
        let old = self.layout()?;
        let l = Layout::hvector(
            nonneg(count, "count")?,
            nonneg(blocklength, "blocklength")?,
            stride as isize * old.extent(),
            old,
        )
        .map_err(rt_err)?;
        Ok(PyDatatype::derived(
            l,
            self.contents_of(
                combiner::VECTOR,
                vec![],
                vec![count, blocklength, stride],
                vec![self.clone()],
            ),
        ))
    }

    fn Create_hvector(&self, count: i64, blocklength: i64, stride: i64) -> PyResult<PyDatatype> {
        let l = Layout::hvector(
            nonneg(count, "count")?,
            nonneg(blocklength, "blocklength")?,
            stride as isize,
            self.layout()?,
        )
        .map_err(rt_err)?;
        Ok(PyDatatype::derived(
            l,
            self.contents_of(
                combiner::HVECTOR,
                vec![],
                vec![count, blocklength, stride],
                vec![self.clone()],
            ),
        ))
    }

    fn Create_indexed(
        &self,
        blocklengths: &Bound<'_, PyAny>,
        displacements: &Bound<'_, PyAny>,
    ) -> PyResult<PyDatatype> {
        let bl = seq_i64(blocklengths)?;
        let dp = seq_i64(displacements)?;
        check_len(&dp, bl.len(), "displacements")?;
        let old = self.layout()?;
        let ext = old.extent();
        let blocks = bl
            .iter()
            .zip(&dp)
            .map(|(&b, &d)| Ok((nonneg(b, "blocklength")?, d as isize * ext)))
            .collect::<PyResult<Vec<_>>>()?;
        let l = Layout::hindexed(blocks, old).map_err(rt_err)?;
        let mut counts = vec![bl.len() as i64];
        counts.extend(&bl);
        counts.extend(&dp);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(combiner::INDEXED, vec![], counts, vec![self.clone()]),
        ))
    }

    fn Create_hindexed(
        &self,
        blocklengths: &Bound<'_, PyAny>,
        displacements: &Bound<'_, PyAny>,
    ) -> PyResult<PyDatatype> {
        let bl = seq_i64(blocklengths)?;
        let dp = seq_i64(displacements)?;
        check_len(&dp, bl.len(), "displacements")?;
        let blocks = bl
            .iter()
            .zip(&dp)
            .map(|(&b, &d)| Ok((nonneg(b, "blocklength")?, d as isize)))
            .collect::<PyResult<Vec<_>>>()?;
        let l = Layout::hindexed(blocks, self.layout()?).map_err(rt_err)?;
        let mut counts = vec![bl.len() as i64];
        counts.extend(&bl);
        counts.extend(&dp);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(combiner::HINDEXED, vec![], counts, vec![self.clone()]),
        ))
    }

    fn Create_indexed_block(
        &self,
        blocklength: i64,
        displacements: &Bound<'_, PyAny>,
    ) -> PyResult<PyDatatype> {
        let dp = seq_i64(displacements)?;
        let b = nonneg(blocklength, "blocklength")?;
        let old = self.layout()?;
        let ext = old.extent();
        let blocks = dp.iter().map(|&d| (b, d as isize * ext)).collect();
        let l = Layout::hindexed(blocks, old).map_err(rt_err)?;
        let mut counts = vec![dp.len() as i64, blocklength];
        counts.extend(&dp);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(combiner::INDEXED_BLOCK, vec![], counts, vec![self.clone()]),
        ))
    }

    fn Create_hindexed_block(
        &self,
        blocklength: i64,
        displacements: &Bound<'_, PyAny>,
    ) -> PyResult<PyDatatype> {
        let dp = seq_i64(displacements)?;
        let b = nonneg(blocklength, "blocklength")?;
        let blocks = dp.iter().map(|&d| (b, d as isize)).collect();
        let l = Layout::hindexed(blocks, self.layout()?).map_err(rt_err)?;
        let mut counts = vec![dp.len() as i64, blocklength];
        counts.extend(&dp);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(combiner::HINDEXED_BLOCK, vec![], counts, vec![self.clone()]),
        ))
    }

    #[classmethod]
    fn Create_struct(
        _cls: &Bound<'_, PyType>,
        blocklengths: &Bound<'_, PyAny>,
        displacements: &Bound<'_, PyAny>,
        datatypes: &Bound<'_, PyAny>,
    ) -> PyResult<PyDatatype> {
        let bl = seq_i64(blocklengths)?;
        let dp = seq_i64(displacements)?;
        check_len(&dp, bl.len(), "displacements")?;
        let types = types_arg(datatypes, bl.len())?;
        let blocks = bl
            .iter()
            .zip(&dp)
            .zip(&types)
            .map(|((&b, &d), t)| Ok((nonneg(b, "blocklength")?, d as isize, t.layout()?)))
            .collect::<PyResult<Vec<_>>>()?;
        let l = Layout::strukt(blocks).map_err(rt_err)?;
        let mut counts = vec![bl.len() as i64];
        counts.extend(&bl);
        counts.extend(&dp);
        Ok(PyDatatype::derived(
            l,
            Contents {
                combiner: combiner::STRUCT,
                ints: vec![],
                addrs: vec![],
                counts,
                types,
            },
        ))
    }

    #[pyo3(signature = (sizes, subsizes, starts, order=consts::ORDER_C))]
    fn Create_subarray(
        &self,
        sizes: &Bound<'_, PyAny>,
        subsizes: &Bound<'_, PyAny>,
        starts: &Bound<'_, PyAny>,
        order: i32,
    ) -> PyResult<PyDatatype> {
        let sz = seq_i64(sizes)?;
        let sub = seq_i64(subsizes)?;
        let st = seq_i64(starts)?;
        check_len(&sub, sz.len(), "subsizes")?;
        check_len(&st, sz.len(), "starts")?;
        let l = subarray_layout(&sz, &sub, &st, order, &self.layout()?)?;
        let mut counts = sz.clone();
        counts.extend(&sub);
        counts.extend(&st);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(
                combiner::SUBARRAY,
                vec![sz.len() as i64, order as i64],
                counts,
                vec![self.clone()],
            ),
        ))
    }

    #[pyo3(signature = (size, rank, gsizes, distribs, dargs, psizes, order=consts::ORDER_C))]
    #[allow(clippy::too_many_arguments)]
    fn Create_darray(
        &self,
        size: i64,
        rank: i64,
        gsizes: &Bound<'_, PyAny>,
        distribs: &Bound<'_, PyAny>,
        dargs: &Bound<'_, PyAny>,
        psizes: &Bound<'_, PyAny>,
        order: i32,
    ) -> PyResult<PyDatatype> {
        let g = seq_i64(gsizes)?;
        let di = seq_i64(distribs)?;
        let da = seq_i64(dargs)?;
        let ps = seq_i64(psizes)?;
        check_len(&di, g.len(), "distribs")?;
        check_len(&da, g.len(), "dargs")?;
        check_len(&ps, g.len(), "psizes")?;
        let l = darray_layout(size, rank, &g, &di, &da, &ps, order, &self.layout()?)?;
        let mut ints = vec![size, rank, g.len() as i64];
        ints.extend(&di);
        ints.extend(&da);
        ints.extend(&ps);
        ints.push(order as i64);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(combiner::DARRAY, ints, g, vec![self.clone()]),
        ))
    }

    fn Create_resized(&self, lb: i64, extent: i64) -> PyResult<PyDatatype> {
        let l = Layout::resized(self.layout()?, lb as isize, extent as isize);
        Ok(PyDatatype::derived(
            l,
            self.contents_of(
                combiner::RESIZED,
                vec![],
                vec![lb, extent],
                vec![self.clone()],
            ),
        ))
    }

    fn Resized(&self, lb: i64, extent: i64) -> PyResult<PyDatatype> {
        self.Create_resized(lb, extent)
    }

    #[classmethod]
    fn Get_value_index(
        cls: &Bound<'_, PyType>,
        value: &Bound<'_, PyDatatype>,
        index: &Bound<'_, PyDatatype>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let (v, i) = (value.get(), index.get());
        v.get()?;
        i.get()?;
        let m = py.import("oxmpi.MPI")?;
        let is = |d: &PyDatatype, name: &str| -> bool {
            match (&d.h, predefined_table().get(name)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        };
        if is(i, "INT") {
            for (val, pair) in [
                ("SHORT", "SHORT_INT"),
                ("INT", "TWOINT"),
                ("LONG", "LONG_INT"),
                ("FLOAT", "FLOAT_INT"),
                ("DOUBLE", "DOUBLE_INT"),
                ("LONG_DOUBLE", "LONG_DOUBLE_INT"),
            ] {
                if is(v, val) {
                    return Ok(m.getattr(pair)?.unbind());
                }
            }
        }
        Ok(m.getattr("DATATYPE_NULL")?.unbind())
    }

    #[classmethod]
    fn Create_f90_integer(_cls: &Bound<'_, PyType>, r: i32) -> PyResult<PyDatatype> {
        let basic = match r {
            ..=2 => I8,
            3..=4 => I16,
            5..=9 => I32,
            10..=18 => I64,
            _ => {
                return Err(arg_error(
                    class::ERR_ARG,
                    &format!("no integer type has a range of {r} digits"),
                ))
            }
        };
        Ok(PyDatatype::parametrized(
            basic,
            Contents {
                combiner: combiner::F90_INTEGER,
                ints: vec![r as i64],
                addrs: vec![],
                counts: vec![],
                types: vec![],
            },
        ))
    }

    #[classmethod]
    fn Create_f90_real(_cls: &Bound<'_, PyType>, p: i32, r: i32) -> PyResult<PyDatatype> {
        let basic = if p <= 6 && r <= 37 {
            F32
        } else if p <= 15 && r <= 307 {
            F64
        } else {
            return Err(arg_error(
                class::ERR_ARG,
                &format!("no real type has precision {p} and range {r}"),
            ));
        };
        Ok(PyDatatype::parametrized(
            basic,
            Contents {
                combiner: combiner::F90_REAL,
                ints: vec![p as i64, r as i64],
                addrs: vec![],
                counts: vec![],
                types: vec![],
            },
        ))
    }

    #[classmethod]
    fn Create_f90_complex(_cls: &Bound<'_, PyType>, p: i32, r: i32) -> PyResult<PyDatatype> {
        let basic = if p <= 6 && r <= 37 {
            C32
        } else if p <= 15 && r <= 307 {
            C64
        } else {
            return Err(arg_error(
                class::ERR_ARG,
                &format!("no complex type has precision {p} and range {r}"),
            ));
        };
        Ok(PyDatatype::parametrized(
            basic,
            Contents {
                combiner: combiner::F90_COMPLEX,
                ints: vec![p as i64, r as i64],
                addrs: vec![],
                counts: vec![],
                types: vec![],
            },
        ))
    }

    #[classmethod]
    fn Match_size(cls: &Bound<'_, PyType>, typeclass: i32, size: i32) -> PyResult<Py<PyAny>> {
        let name = match (typeclass, size) {
            (consts::TYPECLASS_INTEGER, 1) => "INTEGER1",
            (consts::TYPECLASS_INTEGER, 2) => "INTEGER2",
            (consts::TYPECLASS_INTEGER, 4) => "INTEGER4",
            (consts::TYPECLASS_INTEGER, 8) => "INTEGER8",
            (consts::TYPECLASS_REAL, 2) => "REAL2",
            (consts::TYPECLASS_REAL, 4) => "REAL4",
            (consts::TYPECLASS_REAL, 8) => "REAL8",
            (consts::TYPECLASS_COMPLEX, 8) => "COMPLEX8",
            (consts::TYPECLASS_COMPLEX, 16) => "COMPLEX16",
            (consts::TYPECLASS_LOGICAL, 1) => "LOGICAL1",
            (consts::TYPECLASS_LOGICAL, 2) => "LOGICAL2",
            (consts::TYPECLASS_LOGICAL, 4) => "LOGICAL4",
            (consts::TYPECLASS_LOGICAL, 8) => "LOGICAL8",
            _ => {
                return Err(arg_error(
                    class::ERR_ARG,
                    &format!("no datatype of class {typeclass} has {size} bytes"),
                ))
            }
        };
        Ok(cls.py().import("oxmpi.MPI")?.getattr(name)?.unbind())
    }

    fn Commit(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        slf.get().get()?;
        Ok(slf.clone().unbind())
    }

    fn Free(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let h = me.handle()?;
        if h.named.is_some() {
            return Err(type_error("predefined datatypes cannot be freed"));
        }
        let attrs = h.attrs.lock().unwrap_or_else(|e| e.into_inner()).take_all();
        let res = attr::run_deletes(py, slf.as_any(), attrs);
        me.freed.store(true, Ordering::Relaxed);
        res
    }

    /// Frees unless null or predefined.
    fn free(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        if me.is_null() {
            return Ok(());
        }
        let named = me.h.as_ref().and_then(|h| h.named);
        let is_predefined = named.is_some()
            || matches!(
                me.combiner()?,
                combiner::F90_INTEGER | combiner::F90_REAL | combiner::F90_COMPLEX
            );
        if is_predefined {
            // A module constant (MPI.INT) stays as it is; another object
            // naming a predefined type becomes DATATYPE_NULL, as in mpi4py,
            // without freeing the type itself.
            let constant = named.is_some_and(|p| {
                slf.py()
                    .import("oxmpi.MPI")
                    .and_then(|m| m.getattr(p.name))
                    .is_ok_and(|c| c.is(slf))
            });
            if !constant {
                me.freed.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
        PyDatatype::Free(slf)
    }

    // ---------------------------------------------------------- decoding

    fn Get_envelope(&self) -> PyResult<(usize, usize, usize, usize, i32)> {
        let h = self.handle()?;
        Ok(match &h.contents {
            None => (0, 0, 0, 0, combiner::NAMED),
            Some(c) => (
                c.ints.len(),
                c.addrs.len(),
                c.counts.len(),
                c.types.len(),
                c.combiner,
            ),
        })
    }

    #[getter]
    fn envelope(&self) -> PyResult<(usize, usize, usize, usize, i32)> {
        self.Get_envelope()
    }

    fn Get_contents(&self) -> PyResult<ContentsTuple> {
        let h = self.handle()?;
        Ok(match &h.contents {
            None => (vec![], vec![], vec![], vec![]),
            Some(c) => (
                c.ints.clone(),
                c.addrs.clone(),
                c.counts.clone(),
                c.types.clone(),
            ),
        })
    }

    #[getter]
    fn contents(&self) -> PyResult<ContentsTuple> {
        self.Get_contents()
    }

    #[getter(combiner)]
    fn combiner_prop(&self) -> PyResult<i32> {
        self.combiner()
    }

    #[getter]
    fn is_named(&self) -> PyResult<bool> {
        Ok(self.combiner()? == combiner::NAMED)
    }

    #[getter]
    fn is_predefined(&self) -> PyResult<bool> {
        if self.is_null() {
            return Ok(true);
        }
        Ok(matches!(
            self.combiner()?,
            combiner::NAMED
                | combiner::VALUE_INDEX
                | combiner::F90_INTEGER
                | combiner::F90_REAL
                | combiner::F90_COMPLEX
        ))
    }

    /// (base datatype, combiner name, constructor keyword arguments).
    fn decode<'py>(slf: &Bound<'py, Self>) -> PyResult<(Py<PyAny>, String, Bound<'py, PyDict>)> {
        let py = slf.py();
        let me = slf.get();
        let h = me.handle()?;
        let params = PyDict::new(py);
        let Some(c) = &h.contents else {
            return Ok((slf.clone().into_any().unbind(), "NAMED".into(), params));
        };
        let name = combiner::ALL
            .iter()
            .find(|(_, v)| *v == c.combiner)
            .map(|(n, _)| (*n).to_owned())
            .unwrap_or_default();
        let base: Py<PyAny> = if c.types.len() == 1 {
            Py::new(py, c.types[0].clone())?.into_any()
        } else {
            Py::new(py, null_datatype())?.into_any()
        };
        let k = &c.counts;
        let list = |v: &[i64]| -> PyResult<Bound<'py, PyList>> { PyList::new(py, v) };
        match c.combiner {
            combiner::DUP => {}
            combiner::CONTIGUOUS => params.set_item("count", k[0])?,
            combiner::VECTOR | combiner::HVECTOR => {
                params.set_item("count", k[0])?;
                params.set_item("blocklength", k[1])?;
                params.set_item("stride", k[2])?;
            }
            combiner::INDEXED | combiner::HINDEXED | combiner::STRUCT => {
                let n = k[0] as usize;
                params.set_item("blocklengths", list(&k[1..=n])?)?;
                params.set_item("displacements", list(&k[n + 1..=2 * n])?)?;
                if c.combiner == combiner::STRUCT {
                    let types = c
                        .types
                        .iter()
                        .map(|t| Py::new(py, t.clone()))
                        .collect::<PyResult<Vec<_>>>()?;
                    params.set_item("datatypes", PyList::new(py, types)?)?;
                }
            }
            combiner::INDEXED_BLOCK | combiner::HINDEXED_BLOCK => {
                let n = k[0] as usize;
                params.set_item("blocklength", k[1])?;
                params.set_item("displacements", list(&k[2..n + 2])?)?;
            }
            combiner::SUBARRAY => {
                let n = c.ints[0] as usize;
                params.set_item("sizes", list(&k[0..n])?)?;
                params.set_item("subsizes", list(&k[n..2 * n])?)?;
                params.set_item("starts", list(&k[2 * n..3 * n])?)?;
                params.set_item("order", c.ints[1])?;
            }
            combiner::DARRAY => {
                let i = &c.ints;
                let n = i[2] as usize;
                params.set_item("size", i[0])?;
                params.set_item("rank", i[1])?;
                params.set_item("gsizes", list(&k[0..n])?)?;
                params.set_item("distribs", list(&i[3..3 + n])?)?;
                params.set_item("dargs", list(&i[3 + n..3 + 2 * n])?)?;
                params.set_item("psizes", list(&i[3 + 2 * n..3 + 3 * n])?)?;
                params.set_item("order", i[3 + 3 * n])?;
            }
            combiner::RESIZED => {
                params.set_item("lb", k[0])?;
                params.set_item("extent", k[1])?;
            }
            combiner::F90_INTEGER => params.set_item("r", c.ints[0])?,
            combiner::F90_REAL | combiner::F90_COMPLEX => {
                params.set_item("p", c.ints[0])?;
                params.set_item("r", c.ints[1])?;
            }
            _ => {}
        }
        Ok((base, name, params))
    }

    // ------------------------------------------------------------ packing

    fn Pack(
        &self,
        inbuf: &Bound<'_, PyAny>,
        outbuf: &Bound<'_, PyAny>,
        position: i64,
        comm: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let _ = comm;
        self.pack_impl(inbuf, outbuf, position, false)
    }

    fn Unpack(
        &self,
        inbuf: &Bound<'_, PyAny>,
        position: i64,
        outbuf: &Bound<'_, PyAny>,
        comm: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let _ = comm;
        self.unpack_impl(inbuf, position, outbuf, false)
    }

    fn Pack_size(&self, count: i64, comm: &Bound<'_, PyAny>) -> PyResult<i64> {
        let _ = comm;
        let n = nonneg(count, "count")?;
        Ok((self.get()?.size() * n) as i64)
    }

    fn Pack_external(
        &self,
        datarep: &str,
        inbuf: &Bound<'_, PyAny>,
        outbuf: &Bound<'_, PyAny>,
        position: i64,
    ) -> PyResult<i64> {
        check_datarep(datarep)?;
        self.pack_impl(inbuf, outbuf, position, true)
    }

    fn Unpack_external(
        &self,
        datarep: &str,
        inbuf: &Bound<'_, PyAny>,
        position: i64,
        outbuf: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        check_datarep(datarep)?;
        self.unpack_impl(inbuf, position, outbuf, true)
    }

    fn Pack_external_size(&self, datarep: &str, count: i64) -> PyResult<i64> {
        check_datarep(datarep)?;
        let n = nonneg(count, "count")?;
        Ok((self.layout()?.external32_size() * n) as i64)
    }

    // --------------------------------------------------------- attributes

    fn Get_attr(&self, py: Python<'_>, keyval: i32) -> PyResult<Py<PyAny>> {
        let h = self.handle()?;
        attr::lookup(py, AttrKind::Datatype, keyval)?;
        Ok(h.attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(keyval)
            .map(|v| v.clone_ref(py))
            .unwrap_or_else(|| py.None()))
    }

    fn Set_attr(slf: &Bound<'_, Self>, keyval: i32, attrval: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let h = slf.get().handle()?.clone();
        let k = attr::lookup(py, AttrKind::Datatype, keyval)?;
        let old = h
            .attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(k, attrval);
        match old {
            Some(old) => attr::run_delete(py, slf.as_any(), old),
            None => Ok(()),
        }
    }

    fn Delete_attr(slf: &Bound<'_, Self>, keyval: i32) -> PyResult<()> {
        let py = slf.py();
        let h = slf.get().handle()?.clone();
        attr::lookup(py, AttrKind::Datatype, keyval)?;
        let old = h
            .attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(keyval);
        match old {
            Some(old) => attr::run_delete(py, slf.as_any(), old),
            None => Err(mpi_error(
                py,
                class::ERR_KEYVAL,
                &format!("no attribute for keyval {keyval}"),
            )),
        }
    }

    #[classmethod]
    #[pyo3(signature = (copy_fn=None, delete_fn=None, nopython=false))]
    fn Create_keyval(
        _cls: &Bound<'_, PyType>,
        copy_fn: Option<&Bound<'_, PyAny>>,
        delete_fn: Option<&Bound<'_, PyAny>>,
        nopython: bool,
    ) -> PyResult<i32> {
        let _ = nopython;
        attr::create_keyval(AttrKind::Datatype, copy_fn, delete_fn)
    }

    #[classmethod]
    fn Free_keyval(cls: &Bound<'_, PyType>, keyval: i32) -> PyResult<i32> {
        attr::free_keyval(cls.py(), AttrKind::Datatype, keyval)
    }

    // ------------------------------------------------------------ handles

    /// The integer handle (MPI_Type_toint): stable while the object lives,
    /// 0 for the null handle.
    #[getter(handle)]
    fn int_handle(&self) -> i64 {
        type_ints().toint(if self.is_null() {
            None
        } else {
            self.h.as_ref()
        })
    }

    #[classmethod]
    fn fromhandle<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        handle: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = type_ints().lookup(handle, "datatype")?;
        crate::handle::rebuild(
            cls,
            h.map(|h| PyDatatype {
                dt: Some(h.dt.clone()),
                h: Some(h),
                freed: AtomicBool::new(false),
            }),
        )
    }

    fn toint(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn fromint<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        arg: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }

    fn py2f(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn f2py<'py>(cls: &Bound<'py, pyo3::types::PyType>, arg: i64) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }
}

fn check_datarep(datarep: &str) -> PyResult<()> {
    if datarep != "external32" {
        return Err(arg_error(
            class::ERR_UNSUPPORTED_DATAREP,
            &format!("unsupported data representation '{datarep}'"),
        ));
    }
    Ok(())
}

impl PyDatatype {
    /// Number of whole elements a buffer of `len` bytes holds, and checks
    /// that their data lies inside it.
    fn elements_in(&self, len: usize) -> PyResult<(Arc<Layout>, usize)> {
        let l = self.layout()?;
        let ext = l.extent();
        if ext <= 0 {
            return Err(arg_error(
                class::ERR_TYPE,
                &format!("datatype extent {ext} is not positive"),
            ));
        }
        let count = len / ext as usize;
        if let Some((lo, hi)) = l.span(count) {
            if lo < 0 || hi > len as isize {
                return Err(arg_error(
                    class::ERR_BUFFER,
                    "the datatype's data lies outside the buffer",
                ));
            }
        }
        Ok((l, count))
    }

    fn pack_impl(
        &self,
        inbuf: &Bound<'_, PyAny>,
        outbuf: &Bound<'_, PyAny>,
        position: i64,
        external: bool,
    ) -> PyResult<i64> {
        let inv = BufView::get(inbuf, false, false)?;
        let outv = BufView::get(outbuf, true, false)?;
        let (l, count) = self.elements_in(inv.len())?;
        let pos = nonneg(position, "position")?;
        let mut packed = Vec::new();
        // SAFETY: `elements_in` checked that the elements' data lies in the
        // exported (and pinned) input buffer.
        unsafe {
            if external {
                rt::pack_external32(&l, count, inv.ptr(), &mut packed)
            } else {
                rt::pack(&l, count, inv.ptr(), &mut packed)
            }
        };
        if pos + packed.len() > outv.len() {
            return Err(arg_error(
                class::ERR_TRUNCATE,
                &format!(
                    "{} packed bytes at position {pos} do not fit a {}-byte buffer",
                    packed.len(),
                    outv.len()
                ),
            ));
        }
        // SAFETY: the range was checked against the writable output view,
        // which does not overlap `packed`.
        unsafe {
            std::ptr::copy_nonoverlapping(packed.as_ptr(), outv.ptr().add(pos), packed.len())
        };
        Ok((pos + packed.len()) as i64)
    }

    fn unpack_impl(
        &self,
        inbuf: &Bound<'_, PyAny>,
        position: i64,
        outbuf: &Bound<'_, PyAny>,
        external: bool,
    ) -> PyResult<i64> {
        let inv = BufView::get(inbuf, false, false)?;
        let outv = BufView::get(outbuf, true, false)?;
        let (l, count) = self.elements_in(outv.len())?;
        let pos = nonneg(position, "position")?;
        if pos > inv.len() {
            return Err(arg_error(
                class::ERR_ARG,
                &format!(
                    "position {pos} is past the end of a {}-byte buffer",
                    inv.len()
                ),
            ));
        }
        // Copy the input first: it might alias the output.
        let data = {
            // SAFETY: pinned by the view, `pos` checked above.
            unsafe { std::slice::from_raw_parts(inv.ptr().add(pos), inv.len() - pos) }.to_vec()
        };
        let need = if external {
            l.external32_size() * count
        } else {
            l.size * count
        };
        if data.len() < need {
            return Err(arg_error(
                class::ERR_TRUNCATE,
                &format!("{} bytes left to unpack, {need} needed", data.len()),
            ));
        }
        // SAFETY: `elements_in` checked that the elements lie inside the
        // writable output view.
        let used = unsafe {
            if external {
                rt::unpack_external32(&l, count, &data, outv.ptr()).map_err(rt_err)?
            } else {
                rt::unpack(&l, count, &data[..need], outv.ptr())
            }
        };
        Ok((pos + used) as i64)
    }
}

/// `_datatype_create(basetype, combiner, params, free)`: rebuilds a
/// datatype from its decoding (what pickled datatypes call).
#[pyfunction]
#[pyo3(signature = (datatype, combiner, params, free=false))]
pub fn _datatype_create(
    py: Python<'_>,
    datatype: &Bound<'_, PyAny>,
    combiner: &str,
    params: &Bound<'_, PyDict>,
    free: bool,
) -> PyResult<Py<PyAny>> {
    let _ = free;
    let name = format!("Create_{}", combiner.to_lowercase());
    let name = if name == "Create_value_index" {
        "Get_value_index".to_owned()
    } else {
        name
    };
    let t = datatype.getattr(name.as_str())?.call((), Some(params))?;
    let t = t.call_method0("Commit")?;
    let _ = py;
    Ok(t.unbind())
}

/// `_typecode(datatype)`: the character code or type string, or None.
#[pyfunction]
pub fn _typecode(datatype: &Bound<'_, PyDatatype>) -> Option<String> {
    datatype.get().code()
}

/// `_typealign(datatype)`: the alignment of a predefined datatype, or None.
#[pyfunction]
pub fn _typealign(datatype: &Bound<'_, PyDatatype>) -> Option<usize> {
    let d = datatype.get();
    if d.is_null() {
        return None;
    }
    let h = d.h.as_ref()?;
    h.named?;
    match typealign(&d.typechar_str()) {
        0 => Some(h.dt.basic.align()),
        a => Some(a),
    }
}

/// The predefined datatype of a character code or type string (mpi4py's
/// `TypeDict`), None if there is none.
pub fn from_code(code: &str) -> Option<PyDatatype> {
    CODES
        .iter()
        .find(|(c, _)| *c == code)
        .and_then(|(_, name)| predefined(name))
}

/// The predefined datatypes as a dict name -> Datatype (aliases share the
/// object of their target; unavailable ones are DATATYPE_NULL objects).
pub fn predefined_dict<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for p in PREDEFINED {
        let obj = match predefined(p.name) {
            Some(t) => Py::new(py, t)?,
            None => Py::new(py, null_datatype())?,
        };
        d.set_item(p.name, obj)?;
    }
    for (alias, target) in ALIASES {
        d.set_item(*alias, d.get_item(*target)?.expect("target defined"))?;
    }
    d.set_item("DATATYPE_NULL", Py::new(py, null_datatype())?)?;
    Ok(d)
}

/// Combiners, orders, distributions and type classes for the module.
pub fn constants() -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = combiner::ALL
        .iter()
        .map(|(n, c)| (format!("COMBINER_{n}"), *c as i64))
        .collect();
    for (n, c) in [
        ("ORDER_C", consts::ORDER_C),
        ("ORDER_FORTRAN", consts::ORDER_FORTRAN),
        ("ORDER_F", consts::ORDER_FORTRAN),
        ("DISTRIBUTE_BLOCK", consts::DISTRIBUTE_BLOCK),
        ("DISTRIBUTE_CYCLIC", consts::DISTRIBUTE_CYCLIC),
        ("DISTRIBUTE_NONE", consts::DISTRIBUTE_NONE),
        ("DISTRIBUTE_DFLT_DARG", consts::DISTRIBUTE_DFLT_DARG),
        ("TYPECLASS_REAL", consts::TYPECLASS_REAL),
        ("TYPECLASS_INTEGER", consts::TYPECLASS_INTEGER),
        ("TYPECLASS_COMPLEX", consts::TYPECLASS_COMPLEX),
        ("TYPECLASS_LOGICAL", consts::TYPECLASS_LOGICAL),
    ] {
        v.push((n.to_owned(), c as i64));
    }
    v
}

// ------------------------------------------------- non-contiguous messages

/// One place of a packed message in user memory: `count` elements of
/// `layout` from `base`, packed at byte `start` of the copy.
struct Region {
    layout: Arc<Layout>,
    count: usize,
    base: *mut u8,
    start: usize,
}

/// The packed copy of a message whose datatype is not one dense run
/// (several regions for the blocks of a vector collective): sends read it,
/// receives land in it and are unpacked into the user's memory when it is
/// dropped (after the operation completed, or was cancelled: a receive
/// buffer is packed first, so unreceived bytes are written back
/// unchanged).
pub struct Packed {
    buf: Vec<u8>,
    /// Where `buf` lies (taken once, while `buf` was mutably borrowed).
    raw: RawBuf,
    regions: Vec<Region>,
    /// A receive's copy unpacks when dropped (not a persistent request's,
    /// which unpacks at each completion instead).
    unpack_on_drop: bool,
    /// Whether this is the copy of a receive buffer (written by the
    /// operation, so unpacked into the user's memory when it completes).
    receive: bool,
}

// SAFETY: the raw pointers designate user memory that the message's
// BufView pins (or, for BOTTOM, that the caller vouches for) and the
// packed copy, owned here; user memory is only written in `drop`, by
// whichever thread drops the message, after the operation completed.
unsafe impl Send for Packed {}
// SAFETY: shared access never touches the pointers.
unsafe impl Sync for Packed {}

impl Packed {
    /// Packs `count` elements of `layout` at `base` for each region, one
    /// region after the other; a receive (`writable`) unpacks them back on
    /// drop.
    ///
    /// # Safety
    /// Each region's data must lie in memory that is readable now and, for
    /// a receive, writable and pinned until this is dropped.
    pub unsafe fn new(regions: Vec<(Arc<Layout>, usize, *mut u8)>, writable: bool) -> Packed {
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(regions.len());
        for (layout, count, base) in regions {
            let start = buf.len();
            // SAFETY: by this function's contract.
            unsafe { rt::pack(&layout, count, base, &mut buf) };
            placed.push(Region {
                layout,
                count,
                base,
                start,
            });
        }
        // The heap block does not move when the Vec is moved below.
        let raw = RawBuf::from_mut(&mut buf);
        Packed {
            buf,
            raw,
            regions: placed,
            unpack_on_drop: writable,
            receive: writable,
        }
    }

    /// The packed bytes.
    pub fn raw(&self) -> RawBuf {
        self.raw
    }

    /// Whether this is the copy of a receive buffer, to unpack when the
    /// operation completes.
    pub fn is_receive(&self) -> bool {
        self.receive
    }

    /// Makes this the copy of a persistent request's message: the request
    /// packs it afresh at each start ([`Packed::repack`]) and unpacks a
    /// receive at each completion ([`Packed::unpack`]); dropping it then
    /// writes nothing.
    pub fn make_persistent(&mut self) {
        self.unpack_on_drop = false;
    }

    /// Packs the user's data again (the start of a persistent request: a
    /// send sends the buffer as it is now, and a receive that delivers
    /// fewer bytes leaves the rest of the buffer as it is now).
    ///
    /// # Safety
    /// No operation may be using the packed bytes.
    pub unsafe fn repack(&self) {
        let mut fresh = Vec::with_capacity(self.raw.len);
        for r in &self.regions {
            // SAFETY: the regions lie in memory the message pins (or at
            // BOTTOM addresses the caller answers for), as when packed.
            unsafe { rt::pack(&r.layout, r.count, r.base, &mut fresh) };
        }
        debug_assert_eq!(fresh.len(), self.raw.len);
        let n = fresh.len().min(self.raw.len);
        // SAFETY: `raw` is this copy's own allocation, which nobody uses
        // (this function's contract); `fresh` is another allocation.
        unsafe { std::ptr::copy_nonoverlapping(fresh.as_ptr(), self.raw.ptr, n) };
    }

    /// Unpacks the copy into the user's memory (the completion of a
    /// persistent receive).
    ///
    /// # Safety
    /// The operation that wrote the copy has completed.
    pub unsafe fn unpack(&self) {
        for r in &self.regions {
            // SAFETY: the message parser checked that the elements lie in
            // the writable, pinned buffer, and `buf` is a separate
            // allocation that nobody writes any more.
            unsafe { rt::unpack(&r.layout, r.count, &self.buf[r.start..], r.base) };
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        if self.unpack_on_drop {
            // SAFETY: a message is dropped after its operation completed.
            unsafe { self.unpack() };
        }
    }
}

/// The runtime datatype and element count a packed message of `count`
/// elements of layout `l` has: its basic elements when they are all of one
/// type (what reductions need), else bytes.
pub fn packed_elements(l: &Layout, count: usize) -> (Datatype, usize) {
    match l.elem {
        Some(b) if l.size > 0 => (Datatype::new(b), count * l.nelems),
        _ => (Datatype::new(Basic::Byte), count * l.size),
    }
}

/// A message of `blocks` blocks of `count` elements of a datatype that is
/// not one dense run, `offset` bytes into `view` (or at MPI_BOTTOM when
/// there is no view: the datatype's displacements are then absolute
/// addresses from `Get_address`, which MPI makes the caller answer for).
/// The message moves a packed copy; its count is per block, in the packed
/// elements of [`packed_elements`].
pub fn packed_message(
    view: Option<BufView>,
    pytype: PyDatatype,
    count: usize,
    blocks: usize,
    offset: usize,
    writable: bool,
) -> PyResult<crate::buffer::Msg> {
    let l = pytype.layout()?;
    let total = count.checked_mul(blocks).ok_or_else(|| {
        PyValueError::new_err(format!(
            "message: {blocks} x {count} entries overflow the address space"
        ))
    })?;
    let base = match &view {
        Some(v) => {
            let len = v.len() as isize;
            if let Some((lo, hi)) = l.span(total) {
                let at = offset as isize;
                if at + lo < 0 || at + hi > len {
                    return Err(PyValueError::new_err(format!(
                        "message: {total} entries of the datatype (bytes {lo}..{hi} from \
                         byte offset {offset}) do not fit a {len}-byte buffer"
                    )));
                }
            }
            // Inside the exported memory or one past it (checked above).
            v.ptr().wrapping_add(offset)
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: the elements lie in the pinned view (checked above) or at
    // BOTTOM addresses the caller answers for.
    let packed = unsafe { Packed::new(vec![(l.clone(), total, base)], writable) };
    let (dtype, n) = packed_elements(&l, count);
    Ok(crate::buffer::Msg {
        raw: packed.raw(),
        count: n,
        dtype,
        pytype,
        packed: Some(packed),
        view,
    })
}

/// One block of a vector message: `count` elements of `ty` at `at`,
/// packed (the caller checked the memory, or it is MPI_BOTTOM).
pub fn block_message(
    ty: &PyDatatype,
    count: usize,
    at: *mut u8,
    writable: bool,
) -> PyResult<(RawBuf, Packed)> {
    let l = ty.layout()?;
    // SAFETY: the caller checked that the elements lie in pinned memory,
    // or they are at BOTTOM addresses the caller of MPI answers for.
    let packed = unsafe { Packed::new(vec![(l, count, at)], writable) };
    Ok((packed.raw(), packed))
}

/// Integer handles of datatypes.
fn type_ints() -> &'static crate::handle::IntHandles<TypeHandle> {
    static INTS: OnceLock<crate::handle::IntHandles<TypeHandle>> = OnceLock::new();
    INTS.get_or_init(Default::default)
}
