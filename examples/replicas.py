"""Independent replicas farmed out with MPIPoolExecutor.

    mpiexec -n 4 python -m oxmpi.futures examples/replicas.py [replicas] [samples]

Rank 0 runs this script and submits one task per replica; the other ranks
serve them.  Each replica estimates pi by Monte Carlo with its own seed, on
its own communicator (MPI.COMM_SELF), and rank 0 prints the estimates.
"""

import random
import sys

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def replica(seed, samples):
    rng = random.Random(seed)
    hits = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    # The replica's own reduction: a one-process communicator of its worker.
    comm = MPI.COMM_SELF
    total_hits = comm.allreduce(hits, op=MPI.SUM)
    total_samples = comm.allreduce(samples, op=MPI.SUM)
    return seed, 4.0 * total_hits / total_samples, MPI.COMM_WORLD.Get_rank()


def main():
    replicas = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    with MPIPoolExecutor() as executor:
        workers = executor.num_workers
        results = list(executor.map(replica, range(replicas), [samples] * replicas))
    for seed, estimate, rank in results:
        print(f"replica {seed}: pi ~ {estimate:.4f} (worker rank {rank})")
    mean = sum(estimate for _, estimate, _ in results) / len(results)
    print(f"{replicas} replicas on {workers} workers: mean pi ~ {mean:.4f}")


if __name__ == "__main__":
    main()
