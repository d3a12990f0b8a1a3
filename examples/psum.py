"""Seed 001's psum: the sum of a distributed array with Allreduce.

    mpiexec -n 4 python examples/psum.py

Under IPython parallel, engines started with `ipcluster start -n 4
--engines=MPI` import this module and call psum(a) from %px.
"""
import numpy as np
from mpi4py import MPI


def psum(a):
    """Sum of `a` over every rank's local array."""
    local = np.array(np.sum(a), dtype="d")
    total = np.empty_like(local)
    MPI.COMM_WORLD.Allreduce(local, total, op=MPI.SUM)
    return float(total)


if __name__ == "__main__":
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.rank)
    a = rng.random(100)
    s = psum(a)
    everyone = comm.allgather(s)
    assert len(set(everyone)) == 1, "Allreduce gave different sums on different ranks"
    expected = sum(comm.allgather(float(np.sum(a))))
    assert abs(s - expected) < 1e-9 * max(1.0, abs(expected))
    print(f"[{comm.rank}] psum = {s!r}", flush=True)
