"""Communicator contexts: ids come back on Free, so any number of Dup/Free
cycles works, and live communicators never share a context."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def mpiexec():
    """The project's launcher, next to the interpreter running the tests."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def run(nprocs, source, timeout):
    proc = subprocess.run(
        [mpiexec(), "-n", str(nprocs), sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


DUP_FREE = """
    from oxmpi import MPI
    comm = MPI.COMM_WORLD
    keep = comm.Dup()  # a live communicator throughout
    for i in range(200_000):
        d = comm.Dup()
        d.Free()
    # The ids went round the whole id space many times; the communicator
    # made first must still be apart from a new one.
    new = comm.Dup()
    r = comm.rank
    right, left = (r + 1) % comm.size, (r - 1) % comm.size
    reqs = [new.isend(("new", r), right, tag=5), keep.isend(("keep", r), right, tag=5)]
    assert keep.recv(source=left, tag=5) == ("keep", left)
    assert new.recv(source=left, tag=5) == ("new", left)
    MPI.Request.waitall(reqs)
    assert new.allreduce(1) == comm.size
    new.Free()
    keep.Free()
    print("ok", flush=True)
"""


@pytest.mark.parametrize("nprocs", [1, 3])
def test_200k_dup_free_cycles(nprocs):
    out = run(nprocs, DUP_FREE, timeout=600)
    assert out.count("ok") == nprocs


MANY_LIVE = """
    from oxmpi import MPI
    comm = MPI.COMM_WORLD
    comms = [comm.Dup() for _ in range(300)]
    # Split and Create give ids the members agree on, distinct from all
    # the live ones.
    comms.append(comm.Split(comm.rank % 2, comm.rank))
    comms.append(comm.Create(comm.Get_group().Incl(list(range(comm.size)))))
    r, n = comm.rank, comm.size
    reqs = [c.isend(i, (c.rank + 1) % c.size, tag=1) for i, c in enumerate(comms)]
    for i, c in reversed(list(enumerate(comms))):
        assert c.recv(source=(c.rank - 1) % c.size, tag=1) == i
    MPI.Request.waitall(reqs)
    for c in comms:
        c.Free()
    print("ok", flush=True)
"""


@pytest.mark.parametrize("nprocs", [2, 5])
def test_live_communicators_do_not_cross(nprocs):
    out = run(nprocs, MANY_LIVE, timeout=300)
    assert out.count("ok") == nprocs
