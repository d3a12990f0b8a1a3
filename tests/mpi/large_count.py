"""Messages past INT_MAX bytes (2 GiB): point-to-point, Bcast and Allreduce.

Needs about 2 × 2.2 GB of memory per rank (more inside the library), so it is not one of the test_*
programs every run starts; tests/test_system_mpi.py runs it when
OXMPI_TEST_LARGE=1. Run under any launcher at any world size; every rank
prints "OK large_count.py rank r".
"""

import os

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
WHERE = f"[{NAME} rank {rank}/{size}]"
N = (1 << 31) + 4096 + 3  # bytes: past INT_MAX, not a multiple of anything


PERIOD = 251  # prime: a shifted, truncated or duplicated block shows


def pattern(n, seed, start=0):
    """Bytes start..start+n of a pattern with a prime period."""
    base = ((np.arange(PERIOD, dtype=np.uint16) * 7 + seed) % 256).astype(np.uint8)
    return np.resize(np.roll(base, -(start % PERIOD)), n)


def matches(buf, seed):
    """Compares with pattern(len(buf), seed) in slices (no full-size copy)."""
    step = 64 << 20
    for off in range(0, len(buf), step):
        part = buf[off:off + step]
        if not np.array_equal(part, pattern(len(part), seed, off)):
            return False
    return True


def main():
    right, left = (rank + 1) % size, (rank - 1) % size
    # Point-to-point around the ring (to itself on one rank).
    out = pattern(N, rank)
    got = np.zeros(N, dtype=np.uint8)
    sreq = comm.Isend(out, dest=right, tag=1)
    st = MPI.Status()
    comm.Recv(got, source=left, tag=1, status=st)
    sreq.Wait()
    assert st.Get_count(MPI.BYTE) == N, f"{WHERE} status count {st.Get_count(MPI.BYTE)} != {N}"
    assert matches(got, left), f"{WHERE} large message corrupted"
    del out
    # Broadcast from the last rank.
    root = size - 1
    step = 64 << 20
    for off in range(0, N, step):
        part = got[off:off + step]
        part[:] = pattern(len(part), 77, off) if rank == root else 0
    comm.Bcast(got, root=root)
    assert matches(got, 77), f"{WHERE} Bcast of {N} bytes corrupted"
    del got
    # Allreduce of more than INT_MAX elements.
    n = (1 << 31) + 5
    ones = np.ones(n, dtype=np.uint8)
    total = np.zeros(n, dtype=np.uint8)
    comm.Allreduce(ones, total, op=MPI.SUM)
    assert total[0] == size and total[-1] == size and total[1 << 31] == size, f"{WHERE} Allreduce"
    comm.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
