//! `oxmpi._oxmpi`: the thin PyO3 layer between Python and the runtime.
//! Everything here talks to the runtime only through `oxmpi::backend`.

#![allow(non_snake_case)] // method names follow mpi4py (Get_rank, Send, ...)

mod attr;
mod bsend;
mod buffer;
mod coll;
mod comm;
mod compact;
mod datatype;
mod dynproc;
mod engine;
mod errhandler;
mod errors;
mod group;
mod handle;
mod info;
mod intercomm;
mod interop;
mod memory;
mod message;
mod op;
mod p2p;
mod pickle;
mod request;
mod status;
mod topo;
mod ulfm;
mod win;

use pyo3::prelude::*;

use crate::errors::IntoPy;

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

/// Would Finalize wait for the other processes (see `MPI._finalize_at_exit`)?
#[pyfunction]
fn finalize_waits_for_peers() -> bool {
    engine::finalize_waits_for_peers()
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

/// Asks that this process's death be reported to its peers as a process
/// failure instead of ending the job (`oxmpi.futures` workers).
#[pyfunction]
fn set_failure_survivable(py: Python<'_>) -> PyResult<()> {
    engine::engine(py)?.set_failure_survivable().py()
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
    m.add_class::<pickle::ReceivedMessage>()?;
    m.add_class::<comm::InPlace>()?;
    m.add("IN_PLACE", Py::new(py, comm::InPlace::new())?)?;
    m.add("datatypes", datatype::predefined_dict(py)?)?;
    m.add("ops", op::predefined_dict(py)?)?;
    for (name, value) in [
        ("ANY_SOURCE", oxmpi::backend::ANY_SOURCE),
        ("ANY_TAG", oxmpi::backend::ANY_TAG),
        ("PROC_NULL", oxmpi::backend::PROC_NULL),
        ("ROOT", oxmpi::backend::ROOT),
        ("UNDEFINED", oxmpi::backend::UNDEFINED),
    ] {
        m.add(name, value)?;
    }
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(finalize, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(is_finalized, m)?)?;
    m.add_function(wrap_pyfunction!(finalize_waits_for_peers, m)?)?;
    m.add_function(wrap_pyfunction!(wtime, m)?)?;
    m.add_function(wrap_pyfunction!(wtick, m)?)?;
    m.add_function(wrap_pyfunction!(processor_name, m)?)?;
    m.add_function(wrap_pyfunction!(library_version, m)?)?;
    m.add_function(wrap_pyfunction!(universe_size, m)?)?;
    m.add_function(wrap_pyfunction!(launch, m)?)?;
    m.add_function(wrap_pyfunction!(set_failure_survivable, m)?)?;
    add_p2p(m)?;
    add_comm_chapter(m)?;
    m.add_function(wrap_pyfunction!(tag_ub, m)?)?;
    dynproc::add(m)?;
    Ok(())
}

/// Point-to-point: requests, messages, buffers and buffered mode.
fn add_p2p(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<request::PyPrequest>()?;
    m.add_class::<request::PyGrequest>()?;
    m.add_class::<message::PyMessage>()?;
    m.add_class::<memory::PyMemBuffer>()?;
    m.add_class::<memory::Bottom>()?;
    m.add_class::<bsend::BufferAutomatic>()?;
    m.add(
        "REQUEST_NULL",
        Py::new(py, request::PyRequest::null_constant())?,
    )?;
    m.add(
        "MESSAGE_NULL",
        Py::new(py, message::PyMessage::null_constant())?,
    )?;
    m.add(
        "MESSAGE_NO_PROC",
        Py::new(py, message::PyMessage::no_proc_constant())?,
    )?;
    m.add("BOTTOM", Py::new(py, memory::Bottom::new())?)?;
    m.add(
        "BUFFER_AUTOMATIC",
        Py::new(py, bsend::BufferAutomatic::new())?,
    )?;
    m.add("BSEND_OVERHEAD", bsend::BSEND_OVERHEAD)?;
    m.add("F_STATUS_SIZE", status::STATUS_INTS)?;
    m.add_function(wrap_pyfunction!(memory::alloc_mem, m)?)?;
    m.add_function(wrap_pyfunction!(memory::free_mem, m)?)?;
    m.add_function(wrap_pyfunction!(memory::get_address, m)?)?;
    m.add_function(wrap_pyfunction!(bsend::attach_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(bsend::detach_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(bsend::flush_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(bsend::iflush_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(p2p::comm_lock_table, m)?)?;
    m.add_function(wrap_pyfunction!(p2p::comm_lock, m)?)?;
    m.add_function(wrap_pyfunction!(pickle::set_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(buffer::_check_message, m)?)?;
    Ok(())
}

/// Groups, communicator management, topologies, intercommunicators,
/// derived datatypes, info and error handlers (MPI-4.1 chapters 5, 7-10).
fn add_comm_chapter(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<group::PyGroup>()?;
    m.add_class::<info::PyInfo>()?;
    m.add_class::<errhandler::PyErrhandler>()?;
    m.add_class::<topo::PyTopocomm>()?;
    m.add_class::<topo::PyCartcomm>()?;
    m.add_class::<topo::PyGraphcomm>()?;
    m.add_class::<topo::PyDistgraphcomm>()?;
    m.add_class::<intercomm::PyIntercomm>()?;
    m.add("GROUP_NULL", Py::new(py, group::PyGroup { g: None })?)?;
    m.add("GROUP_EMPTY", Py::new(py, group::PyGroup::empty())?)?;
    let (null, env) = info::predefined(py)?;
    m.add("INFO_NULL", null)?;
    m.add("INFO_ENV", env)?;
    for (name, e) in errhandler::predefined(py)? {
        m.add(name, e)?;
    }
    let consts = pyo3::types::PyDict::new(py);
    for (name, v) in datatype::constants() {
        consts.set_item(name, v)?;
    }
    for (name, v) in [
        ("KEYVAL_INVALID", attr::KEYVAL_INVALID),
        ("TAG_UB", attr::predefined::TAG_UB),
        ("HOST", attr::predefined::HOST),
        ("IO", attr::predefined::IO),
        ("WTIME_IS_GLOBAL", attr::predefined::WTIME_IS_GLOBAL),
        ("UNIVERSE_SIZE", attr::predefined::UNIVERSE_SIZE),
        ("LASTUSEDCODE", attr::predefined::LASTUSEDCODE),
        ("APPNUM", attr::predefined::APPNUM),
        ("WIN_BASE", attr::predefined::WIN_BASE),
        ("WIN_SIZE", attr::predefined::WIN_SIZE),
        ("WIN_DISP_UNIT", attr::predefined::WIN_DISP_UNIT),
        ("WIN_CREATE_FLAVOR", attr::predefined::WIN_CREATE_FLAVOR),
        ("WIN_MODEL", attr::predefined::WIN_MODEL),
        ("COMM_TYPE_SHARED", comm::split_type::SHARED),
        ("COMM_TYPE_HW_UNGUIDED", comm::split_type::HW_UNGUIDED),
        ("COMM_TYPE_HW_GUIDED", comm::split_type::HW_GUIDED),
        (
            "COMM_TYPE_RESOURCE_GUIDED",
            comm::split_type::RESOURCE_GUIDED,
        ),
        ("GRAPH", oxmpi::topo::kind::GRAPH),
        ("CART", oxmpi::topo::kind::CART),
        ("DIST_GRAPH", oxmpi::topo::kind::DIST_GRAPH),
        ("MAX_INFO_KEY", info::MAX_INFO_KEY as i32),
        ("MAX_INFO_VAL", info::MAX_INFO_VAL as i32),
        ("MAX_OBJECT_NAME", 128),
        ("MAX_ERROR_STRING", 1024),
    ] {
        consts.set_item(name, v)?;
    }
    consts.set_item("UNWEIGHTED", topo::UNWEIGHTED)?;
    consts.set_item("WEIGHTS_EMPTY", topo::WEIGHTS_EMPTY)?;
    m.add("comm_constants", consts)?;
    win::register(m)?;
    let errs = pyo3::types::PyDict::new(py);
    let strings = pyo3::types::PyDict::new(py);
    for (name, v, desc) in oxmpi::error::class::ALL {
        errs.set_item(*name, *v)?;
        strings.set_item(*v, format!("MPI_{name}: {desc}"))?;
    }
    errs.set_item("ERR_LASTCODE", oxmpi::error::class::ERR_LASTCODE)?;
    m.add("error_classes", errs)?;
    m.add("error_strings", strings)?;
    m.add_function(wrap_pyfunction!(datatype::_datatype_create, m)?)?;
    m.add_function(wrap_pyfunction!(datatype::_typecode, m)?)?;
    m.add_function(wrap_pyfunction!(datatype::_typealign, m)?)?;
    m.add_function(wrap_pyfunction!(topo_compute_dims, m)?)?;
    Ok(())
}

/// MPI_Dims_create.
#[pyfunction]
fn topo_compute_dims(nnodes: i32, dims: Vec<i32>) -> PyResult<Vec<i32>> {
    use errors::IntoPy;
    oxmpi::topo::compute_dims(nnodes, &dims).py()
}
