//! `oxmpi._oxmpi`: the thin PyO3 layer between Python and the runtime.
//! Everything here talks to the runtime only through `oxmpi::backend`.

#![allow(non_snake_case)] // method names follow mpi4py (Get_rank, Send, ...)

mod buffer;
mod coll;
mod comm;
mod datatype;
mod engine;
mod errors;
mod op;
mod p2p;
mod pickle;
mod request;
mod status;

use pyo3::prelude::*;

/// Initialises the runtime (idempotent) and returns (COMM_WORLD, COMM_SELF).
#[pyfunction]
fn init(py: Python<'_>) -> PyResult<(Py<comm::PyIntracomm>, Py<comm::PyIntracomm>)> {
    let e = engine::engine(py)?;
    Ok((
        comm::new_intracomm(py, e.world())?,
        comm::new_intracomm(py, e.self_comm())?,
    ))
}

#[pyfunction]
fn finalize(py: Python<'_>) -> PyResult<()> {
    engine::finalize(py)
}

#[pyfunction]
fn is_initialized() -> bool {
    engine::is_initialized()
}

#[pyfunction]
fn is_finalized() -> bool {
    engine::is_finalized()
}

#[pyfunction]
fn wtime() -> f64 {
    oxmpi::env::wtime()
}

#[pyfunction]
fn wtick() -> f64 {
    oxmpi::env::wtick()
}

#[pyfunction]
fn processor_name(py: Python<'_>) -> PyResult<String> {
    Ok(engine::engine(py)?.processor_name())
}

#[pyfunction]
fn library_version(py: Python<'_>) -> PyResult<String> {
    Ok(engine::engine(py)?.library_version())
}

#[pyfunction]
fn universe_size(py: Python<'_>) -> PyResult<i32> {
    Ok(engine::engine(py)?.universe_size())
}

/// The largest valid tag of the running engine (MPI_TAG_UB).
#[pyfunction]
fn tag_ub(py: Python<'_>) -> PyResult<i32> {
    Ok(engine::engine(py)?.tag_ub())
}

#[pyfunction]
fn set_pickle_protocol(protocol: i32) {
    pickle::PROTOCOL.store(protocol, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the launcher (`mpiexec`, `mpirun`, `oxmpi`) with `args`; returns
/// its exit status. The GIL is released for the whole job.
#[pyfunction]
fn launch(py: Python<'_>, prog: String, args: Vec<String>) -> i32 {
    py.detach(move || oxmpi_launcher::main_with_args(&prog, args))
}

#[pymodule]
fn _oxmpi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<comm::PyComm>()?;
    m.add_class::<comm::PyIntracomm>()?;
    m.add_class::<datatype::PyDatatype>()?;
    m.add_class::<op::PyOp>()?;
    m.add_class::<status::PyStatus>()?;
    m.add_class::<request::PyRequest>()?;
    m.add_class::<request::ReceivedMessage>()?;
    m.add("IN_PLACE", Py::new(py, comm::InPlace)?)?;
    m.add("datatypes", datatype::predefined_dict(py)?)?;
    m.add("ops", op::predefined_dict(py)?)?;
    for (name, value) in [
        ("ANY_SOURCE", oxmpi::backend::ANY_SOURCE),
        ("ANY_TAG", oxmpi::backend::ANY_TAG),
        ("PROC_NULL", oxmpi::backend::PROC_NULL),
        ("ROOT", oxmpi::backend::ROOT),
        ("UNDEFINED", oxmpi::backend::UNDEFINED),
        ("TAG_UB", oxmpi::backend::TAG_UB),
    ] {
        m.add(name, value)?;
    }
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(finalize, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(is_finalized, m)?)?;
    m.add_function(wrap_pyfunction!(wtime, m)?)?;
    m.add_function(wrap_pyfunction!(wtick, m)?)?;
    m.add_function(wrap_pyfunction!(processor_name, m)?)?;
    m.add_function(wrap_pyfunction!(library_version, m)?)?;
    m.add_function(wrap_pyfunction!(universe_size, m)?)?;
    m.add_function(wrap_pyfunction!(set_pickle_protocol, m)?)?;
    m.add_function(wrap_pyfunction!(launch, m)?)?;
    m.add_function(wrap_pyfunction!(tag_ub, m)?)?;
    Ok(())
}
