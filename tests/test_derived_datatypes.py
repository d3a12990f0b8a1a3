"""Derived datatypes in point-to-point calls and collectives: strided
sends and receives (holes left untouched), persistent requests, Bcast,
reductions over contiguous and strided types, a padded struct, and
nonblocking collectives with resized types and absolute addresses."""

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
c = MPI.COMM_WORLD
r, n = c.rank, c.size
vec = MPI.DOUBLE.Create_vector(3, 1, 2).Commit()   # every other element
a = np.arange(6, dtype='d') + 10 * r
out = np.zeros(3)
st = MPI.Status()
c.Sendrecv([a, 1, vec], (r + 1) % n, 0, [out, 3, MPI.DOUBLE], (r - 1) % n, 0, st)
assert list(out) == [0 + 10 * ((r - 1) % n), 2 + 10 * ((r - 1) % n), 4 + 10 * ((r - 1) % n)], out
assert st.Get_count(MPI.DOUBLE) == 3 and st.Get_count(vec) == 1
# receive into a strided layout with Irecv, the untouched holes stay
b = np.full(6, -1.0)
req = c.Irecv([b, 1, vec], (r - 1) % n, 1)
c.Send([np.array([7.0, 8.0, 9.0]), MPI.DOUBLE], (r + 1) % n, 1)
req.Wait()
assert list(b) == [7, -1, 8, -1, 9, -1], b
# Bcast of a strided type
b = np.arange(6, dtype='d') if r == 0 else np.full(6, -1.0)
c.Bcast([b, 1, vec], root=0)
exp = [0, 1, 2, 3, 4, 5] if r == 0 else [0, -1, 2, -1, 4, -1]
assert list(b) == exp, b
# Allreduce with a contiguous derived type and with a vector type
pair = MPI.DOUBLE.Create_contiguous(2).Commit()
x = np.array([1.0, 2.0]) * (r + 1)
y = np.zeros(2)
c.Allreduce([x, 1, pair], [y, 1, pair], op=MPI.SUM)
tot = n * (n + 1) / 2
assert list(y) == [tot, 2 * tot], y
x = np.arange(6, dtype='d'); y = np.zeros(6)
c.Allreduce([x, 1, vec], [y, 1, vec], op=MPI.SUM)
assert list(y) == [0, 0, 2 * n, 0, 4 * n, 0], y
# struct type with a hole, sent to self
st_t = MPI.Datatype.Create_struct([1, 1], [0, 8], [MPI.INT, MPI.DOUBLE]).Commit()
rec = np.zeros(1, dtype=np.dtype([('i', 'i4'), ('d', 'f8')], align=True))
rec['i'] = 3; rec['d'] = 2.5
got = np.zeros(1, dtype=rec.dtype)
c.Sendrecv([rec, 1, st_t], r, 5, [got, 1, st_t], r, 5)
assert got['i'][0] == 3 and got['d'][0] == 2.5
# persistent requests pack at each start and unpack at each completion
sbuf = np.zeros(6); rbuf = np.full(6, -1.0)
sreq = c.Send_init([sbuf, 1, vec], (r + 1) % n, 6)
rreq = c.Recv_init([rbuf, 1, vec], (r - 1) % n, 6)
for k in range(3):
    sbuf[:] = np.arange(6) + 100 * k
    rbuf[1::2] = -k  # the holes: left as they are now
    MPI.Prequest.Startall([rreq, sreq])
    MPI.Request.Waitall([rreq, sreq])
    assert list(rbuf) == [100 * k, -k, 100 * k + 2, -k, 100 * k + 4, -k], (k, rbuf)
sreq.Free(); rreq.Free()
# nonblocking collectives: a strided Iallgather, and an Ialltoallw whose
# blocks are at absolute addresses (BOTTOM)
g = np.full(2 * n, -1.0)
c.Iallgather([np.array([r, -5.0]), 1, MPI.DOUBLE], [g, 1, MPI.DOUBLE.Create_resized(0, 16).Commit()]).Wait()
assert list(g[::2]) == list(range(n)) and all(g[1::2] == -1), g
s = np.full((n, 2), r, dtype='i'); t = np.full((n, 2), -1, dtype='i')
sa, ta = MPI.Get_address(s), MPI.Get_address(t)
sty = [MPI.Datatype.Create_struct([1], [sa + 8 * i], [MPI.INT]).Commit() for i in range(n)]
rty = [MPI.Datatype.Create_struct([1], [ta + 8 * i + 4], [MPI.INT]).Commit() for i in range(n)]
c.Ialltoallw([MPI.BOTTOM, ([1] * n, [0] * n), sty], [MPI.BOTTOM, ([1] * n, [0] * n), rty]).Wait()
assert list(t[:, 0]) == [-1] * n and list(t[:, 1]) == list(range(n)), t
# predefined types at BOTTOM: the displacements are the addresses
c.Alltoallw([MPI.BOTTOM, ([1] * n, [sa + 8 * i for i in range(n)]), [MPI.INT] * n],
            [MPI.BOTTOM, ([1] * n, [ta + 8 * i for i in range(n)]), [MPI.INT] * n])
assert list(t[:, 0]) == list(range(n)) and list(t[:, 1]) == list(range(n)), t
# a reduction over a strided type
x = np.arange(6, dtype='d') * (r + 1); y = np.full(6, -1.0)
c.Reduce([x, 1, vec], [y, 1, vec], op=MPI.MAX, root=0)
if r == 0:
    assert list(y) == [0, -1, 2 * n, -1, 4 * n, -1], y
print(r, "ok")
"""


def mpiexec():
    """The project's launcher, next to the interpreter running the tests."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.parametrize("nprocs", [1, 2, 3])
def test_derived_datatypes(nprocs):
    proc = subprocess.run(
        [mpiexec(), "-n", str(nprocs), sys.executable, "-c", textwrap.dedent(PROGRAM)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok") == nprocs
