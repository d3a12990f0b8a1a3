"""Intercommunicator collectives, blocking and nonblocking: reductions over
the remote group (Iallreduce, Ireduce with MPI.ROOT / PROC_NULL),
Ialltoall, Ibarrier and Disconnect."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = """
import numpy as np
from oxmpi import MPI
w = MPI.COMM_WORLD
color = int(w.rank >= w.size // 2)
local = w.Split(color, 0)
ic = local.Create_intercomm(0, w, w.size // 2 if color == 0 else 0)
rs = ic.Get_remote_size()
# Iallreduce: sum over the remote group
x = np.array([w.rank + 1.0, 1.0]); y = np.zeros(2)
req = ic.Iallreduce(x, y, op=MPI.SUM)
req.Wait()
remote_ranks = [r for r in range(w.size) if (r >= w.size // 2) != color]
assert y[0] == sum(r + 1 for r in remote_ranks) and y[1] == rs, (y, remote_ranks)
# Ireduce to local rank 0 of group 0
if color == 0:
    out = np.zeros(2)
    r = ic.Ireduce(None, out, op=MPI.MAX, root=MPI.ROOT if ic.rank == 0 else MPI.PROC_NULL)
    r.Wait()
    if ic.rank == 0:
        assert out[0] == max(r + 1 for r in remote_ranks), out
else:
    ic.Ireduce(x, None, op=MPI.MAX, root=0).Wait()
# Ialltoall and Ibarrier
s = np.full(rs, w.rank, dtype='i'); d = np.full(rs, -1, dtype='i')
reqs = [ic.Ialltoall(s, d), ic.Ibarrier()]
MPI.Request.Waitall(reqs)
assert list(d) == remote_ranks, d
ic.Disconnect()
local.Free()
print("ok")
"""


def mpiexec():
    """The project's launcher, next to the interpreter running the tests."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.parametrize("nprocs", [2, 3, 5])
def test_intercomm_collectives(nprocs):
    proc = subprocess.run(
        [mpiexec(), "-n", str(nprocs), sys.executable, "-c", textwrap.dedent(PROGRAM)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok") == nprocs
