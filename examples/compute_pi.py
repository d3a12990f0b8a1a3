"""Monte Carlo estimate of pi, split over the ranks.

Each rank throws its share of N random points into the unit square (with
its own seeded generator, in vectorised chunks) and counts those inside the
quarter circle; MPI.Reduce sums the counts on rank 0, which prints the
estimate.

    mpiexec -n 4 python examples/compute_pi.py            # 10 million points
    mpiexec -n 4 python examples/compute_pi.py 100000000  # more points
"""

import math
import sys

import numpy as np

from oxmpi import MPI

CHUNK = 1 << 20  # points per vectorised step: bounded memory


def count_hits(npoints, seed):
    rng = np.random.default_rng(seed)
    hits = 0
    left = npoints
    while left > 0:
        m = min(CHUNK, left)
        x = rng.random(m)
        y = rng.random(m)
        hits += int(np.count_nonzero(x * x + y * y <= 1.0))
        left -= m
    return hits


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10_000_000
    if n <= 0:
        if rank == 0:
            print("usage: compute_pi.py [N > 0]", file=sys.stderr)
        sys.exit(2)

    # N // size points each, the remainder one each to the lowest ranks.
    mine = n // size + (1 if rank < n % size else 0)

    comm.Barrier()
    t0 = MPI.Wtime()
    local = np.array([count_hits(mine, seed=(12345, rank))], dtype=np.int64)
    total = np.zeros(1, dtype=np.int64)
    comm.Reduce(local, total, op=MPI.SUM, root=0)
    elapsed = MPI.Wtime() - t0

    if rank == 0:
        est = 4.0 * total[0] / n
        err = abs(est - math.pi)
        print(f"pi ~= {est:.6f}, error {err:.2e}, {n} points on {size} ranks in {elapsed:.3f} s", flush=True)


if __name__ == "__main__":
    main()
