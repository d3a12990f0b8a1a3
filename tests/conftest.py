import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mpirun import launcher, run_mpi  # noqa: E402


@pytest.fixture(scope="session")
def mpiexec():
    """The path of oxmpi's launcher (checked to be oxmpi's)."""
    return launcher()


@pytest.fixture
def mpirun():
    """``run_mpi(script_or_args, n, timeout=60, env=None)``."""
    return run_mpi

# tests/mpi holds MPI programs run under mpiexec by test_mpi_programs.py;
# importing them in the pytest process would run them there.
collect_ignore = ["mpi"]
