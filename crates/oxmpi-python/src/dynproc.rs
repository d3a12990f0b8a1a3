//! Process creation and management (MPI-4.1 chapter 11): Spawn,
//! Spawn_multiple, Get_parent, Accept/Connect, ports, the name service and
//! Join. Argument handling follows mpi4py's `Comm.pyx`; the work is the
//! engine's (`Communicator::spawn` and friends).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};

use oxmpi::backend::{CommRef, SpawnCommand};
use oxmpi::error::class;

use crate::comm::{adopt, class_named, null_of, PyComm, PyIntracomm};
use crate::engine::{blocking, engine};
use crate::info::PyInfo;

/// Set once the parent intercommunicator has been freed or disconnected:
/// `Get_parent` answers COMM_NULL from then on (MPI-4.1 §11.8.2).
static PARENT_GONE: AtomicBool = AtomicBool::new(false);

/// Records that `c` is gone, if it is the parent intercommunicator.
pub(crate) fn forget_if_parent(py: Python<'_>, c: &CommRef) {
    if let Ok(e) = engine(py) {
        if e.parent().is_some_and(|p| Arc::ptr_eq(&p, c)) {
            PARENT_GONE.store(true, Ordering::SeqCst);
        }
    }
}

/// A command as a string: str, bytes or a path-like object.
fn command_str(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let os = obj.py().import("os")?;
    os.call_method1("fsdecode", (obj,))?.extract()
}

fn is_string_like(o: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(o.is_instance_of::<pyo3::types::PyString>()
        || o.is_instance_of::<pyo3::types::PyBytes>()
        || o.hasattr("__fspath__")?)
}

fn check_len(got: usize, want: usize) -> PyResult<()> {
    if got != want {
        return Err(PyValueError::new_err(format!(
            "expecting {want} items, got {got}"
        )));
    }
    Ok(())
}

/// Spawn_multiple's `args`: None, one string for every command, or one
/// argument list per command.
fn argvs(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<Vec<String>>> {
    match obj {
        None => Ok(vec![Vec::new(); n]),
        Some(o) if o.is_none() => Ok(vec![Vec::new(); n]),
        Some(o) if is_string_like(o)? => Ok(vec![argv(Some(o))?; n]),
        Some(o) => {
            let v: Vec<Vec<String>> = o
                .try_iter()?
                .map(|x| argv(Some(&x?)))
                .collect::<PyResult<_>>()?;
            check_len(v.len(), n)?;
            Ok(v)
        }
    }
}

/// Spawn_multiple's `maxprocs`: None (1 each), one integer for every
/// command, or one per command.
fn nprocs(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<usize>> {
    let positive = |x: i64| {
        usize::try_from(x)
            .ok()
            .filter(|&x| x > 0)
            .ok_or_else(|| PyValueError::new_err("maxprocs must be positive"))
    };
    match obj.filter(|m| !m.is_none()) {
        None => Ok(vec![1; n]),
        Some(m) => match m.extract::<i64>() {
            Ok(v) => Ok(vec![positive(v)?; n]),
            Err(_) => {
                let v: Vec<i64> = m.extract()?;
                check_len(v.len(), n)?;
                v.into_iter().map(positive).collect()
            }
        },
    }
}

/// An argument list: None, one string, or a sequence of strings.
fn argv(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match obj {
        None => Ok(Vec::new()),
        Some(o) if o.is_none() => Ok(Vec::new()),
        Some(o) if o.is_instance_of::<pyo3::types::PyString>() => Ok(vec![o.extract()?]),
        Some(o) => o.try_iter()?.map(|a| command_str(&a?)).collect(),
    }
}

fn info_items(info: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    PyInfo::items_of(info)
}

/// Fills `errcodes` (a list) with each process's code: SUCCESS for those
/// started, ERR_SPAWN for those a `soft` request went without.
fn fill_errcodes(
    errcodes: Option<&Bound<'_, PyAny>>,
    maxprocs: &[usize],
    started: usize,
    nested: bool,
) -> PyResult<()> {
    let Some(list) = errcodes.filter(|e| !e.is_none()) else {
        return Ok(());
    };
    let list = list
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("errcodes must be a list"))?;
    let py = list.py();
    let mut left = started;
    let mut groups: Vec<Vec<i32>> = Vec::with_capacity(maxprocs.len());
    for &m in maxprocs {
        let ok = m.min(left);
        left -= ok;
        groups.push(
            (0..m)
                .map(|i| if i < ok { 0 } else { class::ERR_SPAWN })
                .collect(),
        );
    }
    let value: Py<PyAny> = if nested {
        PyList::new(py, groups)?.into_any().unbind()
    } else {
        PyList::new(py, groups.concat())?.into_any().unbind()
    };
    list.set_slice(0, list.len(), value.bind(py))
}

/// Runs the spawn and wraps its intercommunicator.
fn spawn(
    slf: &Bound<'_, PyIntracomm>,
    commands: Option<Vec<SpawnCommand>>,
    root: i32,
) -> PyResult<(Py<PyAny>, usize)> {
    let py = slf.py();
    let c = slf.as_super().borrow().c()?.clone();
    let c2 = c.clone();
    let new = blocking(py, move || c2.spawn(root, commands.as_deref()))?;
    let started = new.remote_world_ranks().len();
    let obj = adopt(
        py,
        new,
        Some(&c),
        Vec::new(),
        Some(&class_named(py, "Intercomm")?),
    )?;
    Ok((obj, started))
}

#[pymethods]
impl PyIntracomm {
    #[pyo3(signature = (command, args=None, maxprocs=1, info=None, root=0, errcodes=None))]
    fn Spawn(
        slf: &Bound<'_, Self>,
        command: &Bound<'_, PyAny>,
        args: Option<&Bound<'_, PyAny>>,
        maxprocs: i64,
        info: Option<&Bound<'_, PyAny>>,
        root: i32,
        errcodes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        // Like every argument but `root`, significant at the root only.
        let rank = slf.as_super().borrow().c()?.rank();
        let commands = (rank == root)
            .then(|| -> PyResult<_> {
                let maxprocs = usize::try_from(maxprocs)
                    .ok()
                    .filter(|&m| m > 0)
                    .ok_or_else(|| PyValueError::new_err("maxprocs must be positive"))?;
                Ok(vec![SpawnCommand {
                    command: command_str(command)?,
                    args: argv(args)?,
                    maxprocs,
                    info: info_items(info)?,
                }])
            })
            .transpose()?;
        let (obj, started) = spawn(slf, commands, root)?;
        fill_errcodes(
            errcodes,
            &[usize::try_from(maxprocs).unwrap_or(0)],
            started,
            false,
        )?;
        Ok(obj)
    }

    #[pyo3(signature = (command, args=None, maxprocs=None, info=None, root=0, errcodes=None))]
    fn Spawn_multiple(
        slf: &Bound<'_, Self>,
        command: &Bound<'_, PyAny>,
        args: Option<&Bound<'_, PyAny>>,
        maxprocs: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyAny>>,
        root: i32,
        errcodes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let rank = slf.as_super().borrow().c()?.rank();
        let counts = |n: usize| nprocs(maxprocs, n);
        let mut ncmds = None;
        let commands = if rank == root {
            if is_string_like(command)? {
                return Err(PyValueError::new_err("expecting a sequence of path-like"));
            }
            let cmds: Vec<String> = command
                .try_iter()?
                .map(|c| command_str(&c?))
                .collect::<PyResult<_>>()?;
            let n = cmds.len();
            ncmds = Some(n);
            let argvs = argvs(args, n)?;
            let infos: Vec<Vec<(String, String)>> = match info.filter(|i| !i.is_none()) {
                Some(i) if !i.is_instance_of::<PyInfo>() => {
                    let v: Vec<Vec<(String, String)>> = i
                        .try_iter()?
                        .map(|x| info_items(Some(&x?)))
                        .collect::<PyResult<_>>()?;
                    check_len(v.len(), n)?;
                    v
                }
                other => vec![info_items(other)?; n],
            };
            let counts = counts(n)?;
            Some(
                cmds.into_iter()
                    .zip(argvs)
                    .zip(counts)
                    .zip(infos)
                    .map(|(((command, args), maxprocs), info)| SpawnCommand {
                        command,
                        args,
                        maxprocs,
                        info,
                    })
                    .collect(),
            )
        } else {
            None
        };
        let (obj, started) = spawn(slf, commands, root)?;
        if errcodes.is_some_and(|e| !e.is_none()) {
            // The root knows how many commands there were; elsewhere only
            // a sequence of maxprocs says (as in mpi4py).
            let per_command = match (ncmds, maxprocs.filter(|m| !m.is_none())) {
                (Some(n), _) => counts(n)?,
                (None, Some(m)) if m.extract::<i64>().is_err() => counts(m.len()?)?,
                _ => vec![started],
            };
            fill_errcodes(errcodes, &per_command, started, true)?;
        }
        Ok(obj)
    }

    #[pyo3(signature = (port_name, info=None, root=0))]
    fn Accept(
        slf: &Bound<'_, Self>,
        port_name: Option<String>,
        info: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<Py<PyAny>> {
        let _ = info;
        connect_to_port(slf, port_name, root, Side::Accept)
    }

    #[pyo3(signature = (port_name, info=None, root=0))]
    fn Connect(
        slf: &Bound<'_, Self>,
        port_name: Option<String>,
        info: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<Py<PyAny>> {
        let _ = info;
        connect_to_port(slf, port_name, root, Side::Connect)
    }
}

/// Which end of a port connection.
#[derive(Clone, Copy)]
enum Side {
    Accept,
    Connect,
}

/// MPI_Comm_accept / MPI_Comm_connect: the intercommunicator to the group
/// at the other end of `port` (significant at `root`).
fn connect_to_port(
    slf: &Bound<'_, PyIntracomm>,
    port: Option<String>,
    root: i32,
    side: Side,
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let c = slf.as_super().borrow().c()?.clone();
    let c2 = c.clone();
    let new = blocking(py, move || match side {
        Side::Accept => c2.accept(port.as_deref(), root),
        Side::Connect => c2.connect(port.as_deref(), root),
    })?;
    adopt(
        py,
        new,
        Some(&c),
        Vec::new(),
        Some(&class_named(py, "Intercomm")?),
    )
}

#[pymethods]
impl PyComm {
    /// The intercommunicator to the processes that spawned this one, or
    /// COMM_NULL.
    #[classmethod]
    fn Get_parent(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let intercomm = class_named(py, "Intercomm")?;
        match engine(py)?.parent() {
            Some(p) if !PARENT_GONE.load(Ordering::SeqCst) => PARENT_OBJ.with(py, &p, &intercomm),
            _ => null_of(&intercomm),
        }
    }

    /// MPI_Comm_join over the connected socket `fd`.
    #[classmethod]
    fn Join(cls: &Bound<'_, PyType>, fd: i32) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let e = engine(py)?;
        let new = blocking(py, move || e.join(fd))?;
        adopt(
            py,
            new,
            None,
            Vec::new(),
            Some(&class_named(py, "Intercomm")?),
        )
    }
}

/// The parent's Python state (attributes, error handler) is made once.
struct ParentObject(std::sync::OnceLock<()>);

static PARENT_OBJ: ParentObject = ParentObject(std::sync::OnceLock::new());

impl ParentObject {
    fn with(&self, py: Python<'_>, p: &CommRef, cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
        if self.0.get().is_none() {
            let obj = adopt(py, p.clone(), None, Vec::new(), Some(cls))?;
            let _ = self.0.set(());
            return Ok(obj);
        }
        crate::comm::instance_of(cls, Some(p.clone()))
    }
}

fn port_error(py: Python<'_>, e: oxmpi::Error) -> PyErr {
    let _ = py;
    crate::errors::to_pyerr(e)
}

#[pyfunction]
#[pyo3(signature = (info=None))]
pub fn open_port(py: Python<'_>, info: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let _ = info;
    let e = engine(py)?;
    blocking(py, move || e.open_port())
}

#[pyfunction]
pub fn close_port(py: Python<'_>, port_name: &str) -> PyResult<()> {
    engine(py)?
        .close_port(port_name)
        .map_err(|e| port_error(py, e))
}

#[pyfunction]
#[pyo3(signature = (service_name, port_name, info=None))]
pub fn publish_name(
    py: Python<'_>,
    service_name: String,
    port_name: String,
    info: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let _ = info;
    let e = engine(py)?;
    blocking(py, move || e.publish_name(&service_name, Some(&port_name)))
}

#[pyfunction]
#[pyo3(signature = (service_name, port_name, info=None))]
pub fn unpublish_name(
    py: Python<'_>,
    service_name: String,
    port_name: String,
    info: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let _ = (info, port_name);
    let e = engine(py)?;
    blocking(py, move || e.publish_name(&service_name, None))
}

#[pyfunction]
#[pyo3(signature = (service_name, info=None))]
pub fn lookup_name(
    py: Python<'_>,
    service_name: String,
    info: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let _ = info;
    let e = engine(py)?;
    blocking(py, move || e.lookup_name(&service_name))
}

/// Registers the module-level functions.
pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open_port, m)?)?;
    m.add_function(wrap_pyfunction!(close_port, m)?)?;
    m.add_function(wrap_pyfunction!(publish_name, m)?)?;
    m.add_function(wrap_pyfunction!(unpublish_name, m)?)?;
    m.add_function(wrap_pyfunction!(lookup_name, m)?)?;
    Ok(())
}
