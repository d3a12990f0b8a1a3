//! `MPI.Datatype`: the predefined datatypes and their buffer-format codes.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use oxmpi::datatype::{Basic, Datatype};

/// (name, basic type, struct-module format code)
const PREDEFINED: &[(&str, Basic, &str)] = &[
    ("CHAR", Basic::Char, "c"),
    ("WCHAR", Basic::I32, "U"),
    ("SIGNED_CHAR", Basic::I8, "b"),
    ("UNSIGNED_CHAR", Basic::U8, "B"),
    ("BYTE", Basic::Byte, "B"),
    ("PACKED", Basic::Byte, "B"),
    ("SHORT", Basic::I16, "h"),
    ("UNSIGNED_SHORT", Basic::U16, "H"),
    ("INT", Basic::I32, "i"),
    ("UNSIGNED", Basic::U32, "I"),
    ("LONG", Basic::I64, "l"),
    ("UNSIGNED_LONG", Basic::U64, "L"),
    ("LONG_LONG", Basic::I64, "q"),
    ("UNSIGNED_LONG_LONG", Basic::U64, "Q"),
    ("FLOAT", Basic::F32, "f"),
    ("DOUBLE", Basic::F64, "d"),
    ("LONG_DOUBLE", Basic::LongDouble, "g"),
    ("C_BOOL", Basic::Bool, "?"),
    ("BOOL", Basic::Bool, "?"),
    ("CXX_BOOL", Basic::Bool, "?"),
    ("INT8_T", Basic::I8, "i1"),
    ("INT16_T", Basic::I16, "i2"),
    ("INT32_T", Basic::I32, "i4"),
    ("INT64_T", Basic::I64, "i8"),
    ("UINT8_T", Basic::U8, "u1"),
    ("UINT16_T", Basic::U16, "u2"),
    ("UINT32_T", Basic::U32, "u4"),
    ("UINT64_T", Basic::U64, "u8"),
    ("AINT", Basic::I64, "p"),
    ("OFFSET", Basic::I64, "q"),
    ("COUNT", Basic::I64, "q"),
    ("C_COMPLEX", Basic::C32, "Zf"),
    ("C_FLOAT_COMPLEX", Basic::C32, "Zf"),
    ("C_DOUBLE_COMPLEX", Basic::C64, "Zd"),
    ("CXX_FLOAT_COMPLEX", Basic::C32, "Zf"),
    ("CXX_DOUBLE_COMPLEX", Basic::C64, "Zd"),
    ("COMPLEX", Basic::C32, "Zf"),
    ("DOUBLE_COMPLEX", Basic::C64, "Zd"),
    ("SHORT_FLOAT", Basic::F16, "e"),
    ("FLOAT_INT", Basic::FloatInt, "fi"),
    ("DOUBLE_INT", Basic::DoubleInt, "di"),
    ("LONG_INT", Basic::LongInt, "li"),
    ("TWOINT", Basic::TwoInt, "ii"),
    ("SHORT_INT", Basic::ShortInt, "hi"),
    ("LONG_DOUBLE_INT", Basic::LongDoubleInt, "gi"),
    ("INTEGER", Basic::I32, "i"),
    ("REAL", Basic::F32, "f"),
    ("DOUBLE_PRECISION", Basic::F64, "d"),
    ("LOGICAL", Basic::I32, "i"),
    ("REAL4", Basic::F32, "f"),
    ("REAL8", Basic::F64, "d"),
    ("INTEGER1", Basic::I8, "b"),
    ("INTEGER2", Basic::I16, "h"),
    ("INTEGER4", Basic::I32, "i"),
    ("INTEGER8", Basic::I64, "q"),
    ("C_LONG_DOUBLE_COMPLEX", Basic::LongDoubleComplex, "Zg"),
    ("CXX_LONG_DOUBLE_COMPLEX", Basic::LongDoubleComplex, "Zg"),
];

/// An MPI datatype.
#[pyclass(module = "oxmpi.MPI", name = "Datatype", subclass, frozen)]
#[derive(Clone)]
pub struct PyDatatype {
    /// None for DATATYPE_NULL.
    pub dt: Option<Datatype>,
    pub name: String,
    pub code: &'static str,
}

impl PyDatatype {
    pub fn get(&self) -> PyResult<&Datatype> {
        self.dt
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("DATATYPE_NULL is not a usable datatype"))
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

    fn Get_size(&self) -> PyResult<usize> {
        Ok(self.get()?.size())
    }

    #[getter]
    fn size(&self) -> PyResult<usize> {
        self.Get_size()
    }

    fn Get_extent(&self) -> PyResult<(isize, usize)> {
        Ok((0, self.get()?.size()))
    }

    #[getter]
    fn extent(&self) -> PyResult<usize> {
        Ok(self.get()?.size())
    }

    #[getter]
    fn lb(&self) -> isize {
        0
    }

    #[getter]
    fn ub(&self) -> PyResult<usize> {
        self.extent()
    }

    fn Get_name(&self) -> String {
        self.name.clone()
    }

    #[getter(name)]
    fn name_prop(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn typechar(&self) -> &'static str {
        self.code
    }

    fn Dup(&self) -> PyDatatype {
        self.clone()
    }

    fn Commit(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn Free(&self) {}

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyDatatype>() {
            Ok(o) => {
                let o = o.get();
                o.dt == self.dt && o.name == self.name
            }
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.name.hash(&mut h);
        h.finish()
    }

    fn __bool__(&self) -> bool {
        self.dt.is_some()
    }

    fn __repr__(&self) -> String {
        format!("<oxmpi.MPI.Datatype MPI_{}>", self.name)
    }
}

fn null_datatype() -> PyDatatype {
    PyDatatype {
        dt: None,
        name: "DATATYPE_NULL".into(),
        code: "",
    }
}

fn predefined(name: &str) -> Option<PyDatatype> {
    PREDEFINED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(n, b, code)| PyDatatype {
            dt: Some(Datatype::new(b)),
            name: n.into(),
            code,
        })
}

/// The datatype a buffer's struct-module format string describes.
pub fn from_format(format: &str) -> PyResult<PyDatatype> {
    let f = format.trim_start_matches(['@', '=', '<']);
    if f.starts_with(['>', '!']) {
        return Err(PyValueError::new_err(format!(
            "message: buffer format '{format}' is not in native byte order"
        )));
    }
    let name = match f {
        "c" => "CHAR",
        "b" => "SIGNED_CHAR",
        "B" => "UNSIGNED_CHAR",
        "h" => "SHORT",
        "H" => "UNSIGNED_SHORT",
        "i" => "INT",
        "I" => "UNSIGNED",
        "l" => "LONG",
        "L" => "UNSIGNED_LONG",
        "q" => "LONG_LONG",
        "Q" => "UNSIGNED_LONG_LONG",
        "n" => "LONG",
        "N" => "UNSIGNED_LONG",
        "p" => "AINT",
        "e" => "SHORT_FLOAT",
        "f" => "FLOAT",
        "d" => "DOUBLE",
        "g" => "LONG_DOUBLE",
        "?" => "C_BOOL",
        "Zf" | "F" => "C_FLOAT_COMPLEX",
        "Zd" | "D" => "C_DOUBLE_COMPLEX",
        "Zg" | "G" => "C_LONG_DOUBLE_COMPLEX",
        _ => {
            return Err(PyValueError::new_err(format!(
                "message: cannot infer an MPI datatype from buffer format '{format}'; \
                 pass [buffer, datatype] explicitly"
            )))
        }
    };
    Ok(predefined(name).expect("table entry"))
}

/// A datatype given as a `Datatype` or a typecode string ('i', 'd', ...).
pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<PyDatatype> {
    if let Ok(d) = obj.cast::<PyDatatype>() {
        let d = d.get().clone();
        d.get()?;
        return Ok(d);
    }
    if let Ok(s) = obj.extract::<String>() {
        let numpyish = match s.as_str() {
            "i1" | "int8" => Some("INT8_T"),
            "i2" | "int16" => Some("INT16_T"),
            "i4" | "int32" => Some("INT32_T"),
            "i8" | "int64" => Some("INT64_T"),
            "u1" | "uint8" => Some("UINT8_T"),
            "u2" | "uint16" => Some("UINT16_T"),
            "u4" | "uint32" => Some("UINT32_T"),
            "u8" | "uint64" => Some("UINT64_T"),
            "f4" | "float32" => Some("FLOAT"),
            "f8" | "float64" => Some("DOUBLE"),
            "c8" | "complex64" => Some("C_FLOAT_COMPLEX"),
            "c16" | "complex128" => Some("C_DOUBLE_COMPLEX"),
            _ => None,
        };
        if let Some(n) = numpyish {
            return Ok(predefined(n).expect("table entry"));
        }
        return from_format(&s);
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "message: expected a Datatype or a typecode string, got {}",
        obj.get_type().name()?
    )))
}

/// Registers the predefined datatypes as a dict name -> Datatype.
pub fn predefined_dict<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, _, _) in PREDEFINED {
        d.set_item(*name, Py::new(py, predefined(name).expect("table entry"))?)?;
    }
    d.set_item("DATATYPE_NULL", Py::new(py, null_datatype())?)?;
    Ok(d)
}
