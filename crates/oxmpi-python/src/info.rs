//! `MPI.Info` (MPI-4.1 §10): ordered (key, value) string pairs, with the
//! dictionary-like methods mpi4py adds. Info objects are local data; the
//! handle's identity is its `Arc`.

use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use oxmpi::error::class;

use crate::errors::mpi_error;
use crate::handle;

/// MPI_MAX_INFO_KEY and MPI_MAX_INFO_VAL (as MPICH sets them).
pub const MAX_INFO_KEY: usize = 255;
pub const MAX_INFO_VAL: usize = 1024;

/// The contents of an info object, in insertion order.
#[derive(Default, Debug)]
pub struct InfoData {
    items: Mutex<Vec<(String, String)>>,
}

impl InfoData {
    pub fn new(items: Vec<(String, String)>) -> InfoData {
        InfoData {
            items: Mutex::new(items),
        }
    }

    pub fn items(&self) -> Vec<(String, String)> {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<(String, String)>) -> R) -> R {
        f(&mut self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The INFO_ENV handle: what MPI says about how the job was started.
fn env_handle() -> Arc<InfoData> {
    static ENV: OnceLock<Arc<InfoData>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(InfoData::new(env_items(None))))
        .clone()
}

fn env_items(args: Option<Vec<String>>) -> Vec<(String, String)> {
    let argv: Vec<String> = args.unwrap_or_else(|| std::env::args().collect());
    let mut items = Vec::new();
    if let Some(cmd) = argv.first() {
        items.push(("command".to_owned(), cmd.clone()));
    }
    if argv.len() > 1 {
        items.push(("argv".to_owned(), argv[1..].join(" ")));
    }
    let size = std::env::var("PMI_SIZE").unwrap_or_else(|_| "1".into());
    items.push(("maxprocs".to_owned(), size));
    items.push(("soft".to_owned(), String::new()));
    items.push((
        "host".to_owned(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    ));
    items.push(("arch".to_owned(), std::env::consts::ARCH.to_owned()));
    if let Ok(d) = std::env::current_dir() {
        items.push(("wdir".to_owned(), d.display().to_string()));
    }
    items.push(("thread_level".to_owned(), "MPI_THREAD_MULTIPLE".to_owned()));
    items.retain(|(_, v)| !v.is_empty());
    items
}

/// An info handle (INFO_NULL when `h` is None).
#[pyclass(module = "oxmpi.MPI", name = "Info", subclass, weakref)]
pub struct PyInfo {
    pub h: Option<Arc<InfoData>>,
}

fn info_err(code: i32, msg: &str) -> PyErr {
    Python::attach(|py| mpi_error(py, code, msg))
}

fn check_key(key: &str) -> PyResult<()> {
    if key.is_empty() || key.len() > MAX_INFO_KEY {
        return Err(info_err(
            class::ERR_INFO_KEY,
            &format!("info keys must have 1 to {MAX_INFO_KEY} characters"),
        ));
    }
    Ok(())
}

impl PyInfo {
    pub fn new_with(items: Vec<(String, String)>) -> PyInfo {
        PyInfo {
            h: Some(Arc::new(InfoData::new(items))),
        }
    }

    pub fn data(&self) -> PyResult<&Arc<InfoData>> {
        self.h
            .as_ref()
            .ok_or_else(|| info_err(class::ERR_INFO, "invalid info: INFO_NULL"))
    }

    fn is_env(&self) -> bool {
        self.h
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(h, &env_handle()))
    }

    /// The (key, value) pairs of an info argument: None or INFO_NULL give
    /// none.
    pub fn items_of(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
        match obj {
            None => Ok(Vec::new()),
            Some(o) if o.is_none() => Ok(Vec::new()),
            Some(o) => {
                let i = o
                    .cast::<PyInfo>()
                    .map_err(|_| PyTypeError::new_err("expected an Info object"))?;
                let b = i.borrow();
                Ok(b.h.as_ref().map(|h| h.items()).unwrap_or_default())
            }
        }
    }

    fn fill(&self, items: &Bound<'_, PyAny>) -> PyResult<()> {
        if items.hasattr("keys")? {
            for k in items.call_method0("keys")?.try_iter()? {
                let k = k?;
                let v = items.get_item(&k)?;
                self.Set(&k.extract::<String>()?, &v.extract::<String>()?)?;
            }
        } else {
            let it = items
                .try_iter()
                .map_err(|_| PyTypeError::new_err("expected a mapping or pairs of strings"))?;
            for pair in it {
                let (k, v): (String, String) = pair?.extract()?;
                self.Set(&k, &v)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl PyInfo {
    #[new]
    #[pyo3(signature = (info=None))]
    fn py_new(info: Option<&Bound<'_, PyInfo>>) -> PyInfo {
        PyInfo {
            h: info.and_then(|i| i.borrow().h.clone()),
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.borrow();
        let same = other
            .cast::<PyInfo>()
            .ok()
            .map(|o| handle::same(me.h.as_ref(), o.borrow().h.as_ref()));
        handle::richcmp(slf.as_any(), same, op)
    }

    fn __hash__(&self) -> usize {
        self.h.as_ref().map_or(0, |h| Arc::as_ptr(h) as usize)
    }

    fn __bool__(&self) -> bool {
        self.h.is_some()
    }

    /// INFO_NULL and INFO_ENV pickle by name; any other info as a new info
    /// with the same contents.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let (name, items) = {
            let me = slf.borrow();
            match &me.h {
                None => (Some("INFO_NULL"), None),
                Some(_) if me.is_env() => (Some("INFO_ENV"), None),
                Some(h) => (None, Some(h.items())),
            }
        };
        match items {
            None => handle::reduce(slf.as_any(), name),
            Some(items) => {
                let create = slf.get_type().getattr("Create")?;
                let list = PyList::new(py, items)?;
                Ok(PyTuple::new(py, [create, PyTuple::new(py, [list])?.into_any()])?.into_any())
            }
        }
    }

    #[classmethod]
    #[pyo3(signature = (items=None))]
    fn Create(cls: &Bound<'_, PyType>, items: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let obj = cls.call0()?;
        obj.cast::<PyInfo>()?.borrow_mut().h = Some(Arc::new(InfoData::default()));
        if let Some(items) = items {
            if !items.is_none() {
                obj.cast::<PyInfo>()?.borrow().fill(items)?;
            }
        }
        Ok(obj.unbind())
    }

    #[classmethod]
    #[pyo3(signature = (args=None))]
    fn Create_env(cls: &Bound<'_, PyType>, args: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let argv = match args {
            None => None,
            Some(a) if a.is_none() => None,
            Some(a) => {
                if let Ok(s) = a.extract::<String>() {
                    Some(vec![s])
                } else {
                    Some(a.extract::<Vec<String>>()?)
                }
            }
        };
        let obj = cls.call0()?;
        obj.cast::<PyInfo>()?.borrow_mut().h = Some(Arc::new(InfoData::new(env_items(
            argv.filter(|v| !v.is_empty()),
        ))));
        Ok(obj.unbind())
    }

    fn Free(&mut self) -> PyResult<()> {
        self.data()?;
        if self.is_env() {
            return Err(info_err(class::ERR_INFO, "INFO_ENV cannot be freed"));
        }
        self.h = None;
        Ok(())
    }

    /// Frees unless a module constant (INFO_ENV); another object naming
    /// INFO_ENV becomes INFO_NULL.
    fn free(slf: &Bound<'_, Self>) {
        if !handle::is_module_constant(slf.as_any()) {
            slf.borrow_mut().h = None;
        }
    }

    fn Dup(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let items = slf.borrow().data()?.items();
        let obj = slf.get_type().call0()?;
        obj.cast::<PyInfo>()?.borrow_mut().h = Some(Arc::new(InfoData::new(items)));
        Ok(obj.unbind())
    }

    fn Get(&self, key: &str) -> PyResult<Option<String>> {
        let h = self.data()?;
        check_key(key)?;
        Ok(h.with(|v| v.iter().find(|(k, _)| k == key).map(|(_, val)| val.clone())))
    }

    fn Set(&self, key: &str, value: &str) -> PyResult<()> {
        let h = self.data()?;
        if self.is_env() {
            return Err(info_err(class::ERR_INFO, "INFO_ENV is read-only"));
        }
        check_key(key)?;
        if value.len() > MAX_INFO_VAL {
            return Err(info_err(
                class::ERR_INFO_VALUE,
                &format!("info values may have at most {MAX_INFO_VAL} characters"),
            ));
        }
        h.with(|v| match v.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => v.push((key.to_owned(), value.to_owned())),
        });
        Ok(())
    }

    fn Delete(&self, key: &str) -> PyResult<()> {
        let h = self.data()?;
        check_key(key)?;
        let found = h.with(|v| match v.iter().position(|(k, _)| k == key) {
            Some(i) => {
                v.remove(i);
                true
            }
            None => false,
        });
        if !found {
            return Err(info_err(
                class::ERR_INFO_NOKEY,
                &format!("info key '{key}' not found"),
            ));
        }
        Ok(())
    }

    fn Get_nkeys(&self) -> PyResult<usize> {
        Ok(self.data()?.with(|v| v.len()))
    }

    fn Get_nthkey(&self, n: i64) -> PyResult<String> {
        let h = self.data()?;
        h.with(|v| {
            usize::try_from(n)
                .ok()
                .and_then(|i| v.get(i))
                .map(|(k, _)| k.clone())
        })
        .ok_or_else(|| info_err(class::ERR_INFO_KEY, &format!("info has no key number {n}")))
    }

    // ------------------------------------------------------------ handles

    /// The integer handle (MPI_Info_toint): stable while the object lives,
    /// 0 for the null handle.
    #[getter(handle)]
    fn int_handle(&self) -> i64 {
        info_ints().toint(self.h.as_ref())
    }

    #[classmethod]
    fn fromhandle<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        handle: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = info_ints().lookup(handle, "info object")?;
        crate::handle::rebuild(cls, h.map(|h| PyInfo { h: Some(h) }))
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

    // ------------------------------------------------ mapping emulation

    fn __len__(&self) -> usize {
        self.h.as_ref().map_or(0, |h| h.with(|v| v.len()))
    }

    fn __contains__(&self, key: &str) -> bool {
        self.h
            .as_ref()
            .is_some_and(|h| h.with(|v| v.iter().any(|(k, _)| k == key)))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.keys())?.try_iter()?.into_any())
    }

    fn __getitem__(&self, key: &str) -> PyResult<String> {
        if self.h.is_none() {
            return Err(PyKeyError::new_err(key.to_owned()));
        }
        self.Get(key)?
            .ok_or_else(|| PyKeyError::new_err(key.to_owned()))
    }

    fn __setitem__(&self, key: &str, value: &str) -> PyResult<()> {
        if self.h.is_none() {
            return Err(PyKeyError::new_err(key.to_owned()));
        }
        self.Set(key, value)
    }

    fn __delitem__(&self, key: &str) -> PyResult<()> {
        if !self.__contains__(key) {
            return Err(PyKeyError::new_err(key.to_owned()));
        }
        self.Delete(key)
    }

    #[pyo3(name = "get", signature = (key, default=None))]
    fn get_or(&self, key: &str, default: Option<Py<PyAny>>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.h.is_some() {
            if let Some(v) = self.Get(key)? {
                return Ok(v.into_pyobject(py)?.into_any().unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    fn keys(&self) -> Vec<String> {
        self.h
            .as_ref()
            .map(|h| h.items().into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    fn values(&self) -> Vec<String> {
        self.h
            .as_ref()
            .map(|h| h.items().into_iter().map(|(_, v)| v).collect())
            .unwrap_or_default()
    }

    fn items(&self) -> Vec<(String, String)> {
        self.h.as_ref().map(|h| h.items()).unwrap_or_default()
    }

    #[pyo3(signature = (items=None, **kwds))]
    fn update(
        &self,
        items: Option<&Bound<'_, PyAny>>,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        if self.h.is_none() {
            return Err(PyKeyError::new_err(()));
        }
        if let Some(items) = items {
            self.fill(items)?;
        }
        if let Some(kw) = kwds {
            self.fill(kw.as_any())?;
        }
        Ok(())
    }

    #[pyo3(signature = (key, *default))]
    fn pop(&self, py: Python<'_>, key: &str, default: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        if self.h.is_some() {
            if let Some(v) = self.Get(key)? {
                self.Delete(key)?;
                return Ok(v.into_pyobject(py)?.into_any().unbind());
            }
        }
        if !default.is_empty() {
            return Ok(default.get_item(0)?.unbind());
        }
        Err(PyKeyError::new_err(key.to_owned()))
    }

    fn popitem(&self) -> PyResult<(String, String)> {
        let h = self.h.as_ref().ok_or_else(|| PyKeyError::new_err(()))?;
        h.with(|v| v.pop()).ok_or_else(|| PyKeyError::new_err(()))
    }

    fn copy(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        if slf.borrow().h.is_none() {
            return Ok(slf.get_type().call0()?.unbind());
        }
        PyInfo::Dup(slf)
    }

    fn clear(&self) {
        if let Some(h) = &self.h {
            if !self.is_env() {
                h.with(|v| v.clear());
            }
        }
    }
}

/// INFO_NULL and INFO_ENV for the module.
pub fn predefined(py: Python<'_>) -> PyResult<(Py<PyInfo>, Py<PyInfo>)> {
    Ok((
        Py::new(py, PyInfo { h: None })?,
        Py::new(
            py,
            PyInfo {
                h: Some(env_handle()),
            },
        )?,
    ))
}

/// Integer handles of info objects.
fn info_ints() -> &'static crate::handle::IntHandles<InfoData> {
    static INTS: std::sync::OnceLock<crate::handle::IntHandles<InfoData>> =
        std::sync::OnceLock::new();
    INTS.get_or_init(Default::default)
}
