"""Execute computations asynchronously using MPI processes.

The API of ``mpi4py.futures``, on oxmpi.  Run a program with its workers::

    mpiexec -n 8 python -m oxmpi.futures script.py

Rank 0 runs ``script.py``; every ``MPIPoolExecutor`` it creates hands tasks
to ranks 1..7.  ``MPICommExecutor(comm, root)`` does the same inside an
ordinary MPI program.  Anywhere else (``python script.py``, a notebook, a
rank of an ordinary job), an ``MPIPoolExecutor`` spawns its own workers
(``MPI.Comm.Spawn``, ``python -m oxmpi.futures.server``).
"""
# pylint: disable=redefined-builtin

from ._base import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    TimeoutError,  # noqa: A004
    as_completed,
    wait,
)
from .pool import (
    MPICommExecutor,
    MPIPoolExecutor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    get_comm_workers,
)
from .util import collect, compose

__all__ = [
    "Future",
    "Executor",
    "wait",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
    "as_completed",
    "CancelledError",
    "TimeoutError",
    "InvalidStateError",
    "BrokenExecutor",
    "MPIPoolExecutor",
    "MPICommExecutor",
    "ThreadPoolExecutor",
    "ProcessPoolExecutor",
    "get_comm_workers",
    "collect",
    "compose",
]
