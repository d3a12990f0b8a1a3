//! `MPI.Status`.

use pyo3::prelude::*;

use oxmpi::backend::{Status, UNDEFINED};

use crate::datatype::PyDatatype;

/// What a receive or probe found: source, tag, error and byte count.
#[pyclass(module = "oxmpi.MPI", name = "Status", subclass)]
#[derive(Clone, Default)]
pub struct PyStatus {
    pub st: Status,
}

impl PyStatus {
    /// Stores `st` into an optional user-supplied Status object.
    pub fn fill(target: Option<&Bound<'_, PyStatus>>, st: Status) {
        if let Some(t) = target {
            t.borrow_mut().st = st;
        }
    }
}

fn count_of(bytes: usize, dt: Option<&Bound<'_, PyDatatype>>) -> PyResult<i64> {
    let size = match dt {
        Some(d) => d.get().get()?.size(),
        None => 1,
    };
    if size == 0 {
        return Ok(0);
    }
    if bytes % size != 0 {
        return Ok(UNDEFINED as i64);
    }
    Ok((bytes / size) as i64)
}

#[pymethods]
impl PyStatus {
    #[new]
    #[pyo3(signature = (status=None))]
    fn new(status: Option<&Bound<'_, PyStatus>>) -> PyStatus {
        status
            .map(|s| s.borrow().clone())
            .unwrap_or_else(|| PyStatus {
                st: Status {
                    source: oxmpi::backend::ANY_SOURCE,
                    tag: oxmpi::backend::ANY_TAG,
                    ..Status::default()
                },
            })
    }

    fn Get_source(&self) -> i32 {
        self.st.source
    }
    fn Set_source(&mut self, source: i32) {
        self.st.source = source;
    }
    fn Get_tag(&self) -> i32 {
        self.st.tag
    }
    fn Set_tag(&mut self, tag: i32) {
        self.st.tag = tag;
    }
    fn Get_error(&self) -> i32 {
        self.st.error
    }
    fn Set_error(&mut self, error: i32) {
        self.st.error = error;
    }

    #[getter]
    fn get_source(&self) -> i32 {
        self.st.source
    }
    #[setter]
    fn set_source(&mut self, v: i32) {
        self.st.source = v;
    }
    #[getter]
    fn get_tag(&self) -> i32 {
        self.st.tag
    }
    #[setter]
    fn set_tag(&mut self, v: i32) {
        self.st.tag = v;
    }
    #[getter]
    fn get_error(&self) -> i32 {
        self.st.error
    }
    #[setter]
    fn set_error(&mut self, v: i32) {
        self.st.error = v;
    }

    /// Number of elements of `datatype` received (UNDEFINED if the byte
    /// count is not a multiple of its size).
    #[pyo3(signature = (datatype=None))]
    fn Get_count(&self, datatype: Option<&Bound<'_, PyDatatype>>) -> PyResult<i64> {
        count_of(self.st.count, datatype)
    }

    #[pyo3(signature = (datatype=None))]
    fn Get_elements(&self, datatype: Option<&Bound<'_, PyDatatype>>) -> PyResult<i64> {
        count_of(self.st.count, datatype)
    }

    #[pyo3(signature = (datatype, count))]
    fn Set_elements(&mut self, datatype: &Bound<'_, PyDatatype>, count: i64) -> PyResult<()> {
        self.st.count = count.max(0) as usize * datatype.get().get()?.size();
        Ok(())
    }

    #[getter]
    fn count(&self) -> usize {
        self.st.count
    }

    fn Is_cancelled(&self) -> bool {
        self.st.cancelled
    }

    fn Set_cancelled(&mut self, flag: bool) {
        self.st.cancelled = flag;
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.st.cancelled
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyStatus>()
            .map(|o| o.borrow().st == self.st)
            .unwrap_or(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<oxmpi.MPI.Status source={} tag={} error={} count={}>",
            self.st.source, self.st.tag, self.st.error, self.st.count
        )
    }
}
