"""Nonblocking collectives progress on their own (an MPI program).

Run under mpiexec at any world size; every rank prints
"OK test_coll_nonblocking.py rank r".

* A rank may start an Ibarrier and do point-to-point work before waiting
  on it (MPI-4.1 §6.12 forbids nothing of the sort; it must not deadlock).
* A nonblocking collective completes while one member computes without
  entering MPI at all: its peers finish their part long before that member
  waits.
* Several nonblocking collectives on several communicators, with a Python
  reduction operation, complete in any waiting order.
"""

import os
import time

import numpy as np

if __name__ == "__main__":
    from oxmpi import MPI

    NAME = os.path.basename(__file__)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()

    # Ibarrier, then point-to-point around a ring, then the wait.
    req = world.Ibarrier()
    right, left = (rank + 1) % size, (rank - 1) % size
    got = world.sendrecv(rank, dest=right, source=left)
    assert got == left
    token = np.array([rank], "i")
    out = np.empty(1, "i")
    world.Sendrecv(token, right, 7, out, left, 7)
    assert out[0] == left
    req.Wait()

    # Rank 0 starts a large broadcast and computes without MPI; the others
    # wait for the broadcast and report when they got it.
    COMPUTE = 3.0
    n = 1 << 20
    buf = np.arange(n, dtype="d") if rank == 0 else np.zeros(n)
    start = world.bcast(time.monotonic(), root=0)
    req = world.Ibcast(buf, root=0)
    if rank == 0:
        t0 = time.monotonic()
        x = 0
        while time.monotonic() - t0 < COMPUTE:
            x += 1  # pure Python: no MPI call, no progress from this thread
        finished_compute = time.monotonic()
        req.Wait()
    else:
        req.Wait()
        finished_compute = None
    done = time.monotonic()
    assert np.array_equal(buf, np.arange(n, dtype="d"))
    times = world.gather(done, root=0)
    if rank == 0 and size > 1:
        late = max(times[1:])
        assert late < finished_compute - 0.5, (
            f"the broadcast did not progress while rank 0 computed: peers done at "
            f"{late - start:.2f} s, rank 0 stopped computing at {finished_compute - start:.2f} s"
        )

    # Outstanding collectives on two communicators, a user operation, and
    # waiting in reverse order while polling another.
    def maxabs(a, b, dt):
        x = np.frombuffer(a, dtype="d")
        y = np.frombuffer(b, dtype="d")
        y[...] = np.where(np.abs(x) > np.abs(y), x, y)

    op = MPI.Op.Create(maxabs, True)
    dup = world.Dup()
    v = np.array([(-1.0) ** rank * rank, rank + 0.5])
    r1 = np.empty(2)
    r2 = np.empty(2)
    reqs = [
        world.Iallreduce(v, r1, op),
        dup.Iallreduce(v, r2, MPI.SUM),
        dup.Ibarrier(),
        world.Ibarrier(),
    ]
    while not reqs[3].Test():
        pass
    for r in reversed(reqs):
        r.Wait()
    want = (-1.0) ** (size - 1) * (size - 1)
    assert r1[0] == want and r1[1] == size - 0.5, r1
    assert r2[1] == sum(q + 0.5 for q in range(size))
    dup.Barrier()
    op.Free()
    dup.Free()
    print(f"OK {NAME} rank {rank}", flush=True)
