"""One-sided communication (an MPI program).

Run under mpiexec at any world size; every rank prints
"OK test_rma.py rank r".

* Put and Get under Fence, on every window flavor (Create over the
  caller's memory, Allocate, Allocate_shared, Create_dynamic with an
  attached buffer), with derived target datatypes (a strided vector).
* Accumulate under Fence: every rank adds into every target; sums exact.
* Every rank hammers rank 0 with Fetch_and_op increments under shared
  locks, and with read-modify-write sequences under exclusive locks: no
  update is lost, so the totals are exact (atomicity and mutual exclusion).
* Compare_and_swap elects exactly one winner.
* General active target (Post/Start/Complete/Wait) around a ring.
* Out-of-range accesses raise MPI.Exception (ERR_RMA_RANGE), never write.
* oxmpi.util.sync: a Counter hands out each value once; a Mutex excludes.
"""

import os

import numpy as np

if __name__ == "__main__":
    from oxmpi import MPI
    from oxmpi.util import sync

    NAME = os.path.basename(__file__)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    try:
        MPI.Win.Allocate(8, 8, MPI.INFO_NULL, MPI.COMM_SELF).Free()
    except NotImplementedError as exc:
        # A backend without windows (the system-MPI one, so far): every
        # rank says so and the job ends cleanly; the harness reports a skip.
        print(f"SKIP {NAME} rank {rank}: {exc}", flush=True)
        raise SystemExit(0)
    N = 16

    def windows():
        """(window, its local memory as an array) for each flavor with
        memory: N doubles per rank, displacement unit 8; freed after use."""
        mem = np.zeros(N, "d")
        w = MPI.Win.Create(mem, mem.itemsize, MPI.INFO_NULL, world)
        yield w, mem
        w.Free()
        w = MPI.Win.Allocate(N * 8, 8, MPI.INFO_NULL, world)
        yield w, np.frombuffer(w.tomemory(), "d")
        w.Free()
        w = MPI.Win.Allocate_shared(N * 8, 8, MPI.INFO_NULL, world)
        yield w, np.frombuffer(w.tomemory(), "d")
        w.Free()

    # Put / Get under Fence, every flavor, neighbour exchange.
    right, left = (rank + 1) % size, (rank - 1) % size
    for win, local in windows():
        local[:] = 0
        win.Fence()
        win.Put(np.full(N, rank + 1.0), right)
        win.Fence()
        assert (local == left + 1.0).all(), (win.flavor, local)
        got = np.zeros(N)
        win.Get(got, right)
        win.Fence()
        assert (got == rank + 1.0).all()
        # A strided target: every other element, N/2 of them.
        vec = MPI.DOUBLE.Create_vector(N // 2, 1, 2).Commit()
        local[:] = -1
        win.Fence()
        win.Put(np.arange(N // 2, dtype="d"), right, (0, 1, vec))
        win.Fence()
        assert (local[0::2] == np.arange(N // 2)).all() and (local[1::2] == -1).all()
        back = np.zeros(N // 2)
        win.Get(back, right, (0, 1, vec))
        win.Fence()
        assert (back == np.arange(N // 2)).all()
        vec.Free()
        # Accumulate: everyone adds its rank + 1 into every target.
        local[:] = 0
        win.Fence()
        for t in range(size):
            win.Accumulate(np.full(N, rank + 1.0), t, op=MPI.SUM)
        win.Fence()
        assert (local == size * (size + 1) / 2).all(), local

    # Dynamic window: attach, publish the address, Put into it.
    dyn = MPI.Win.Create_dynamic(MPI.INFO_NULL, world)
    mem = np.zeros(4, "i")
    dyn.Attach(mem)
    addrs = world.allgather(MPI.Get_address(mem))
    dyn.Fence()
    dyn.Put(np.full(4, rank, "i"), right, addrs[right])
    dyn.Fence()
    assert (mem == left).all(), mem
    # Memory that is not attached is refused, never written.
    try:
        dyn.Lock(right)
        dyn.Put(np.zeros(4, "i"), right, addrs[right] + mem.nbytes)
    except MPI.Exception as e:
        assert e.Get_error_class() == MPI.ERR_RMA_RANGE, e
    else:
        raise AssertionError("a Put outside the attached memory was accepted")
    finally:
        dyn.Unlock(right)
    dyn.Fence()
    dyn.Detach(mem)
    dyn.Free()

    # Atomicity: concurrent Fetch_and_op increments sum exactly, and each
    # rank sees distinct old values.
    counter = np.zeros(2, "l")
    win = MPI.Win.Create(counter, counter.itemsize, MPI.INFO_NULL, world)
    ROUNDS = 200
    one = np.ones(1, "l")
    old = np.zeros(1, "l")
    seen = []
    for _ in range(ROUNDS):
        win.Lock(0, MPI.LOCK_SHARED)
        win.Fetch_and_op(one, old, 0, 0, MPI.SUM)
        win.Unlock(0)
        seen.append(int(old[0]))
    # Exclusive locks: a non-atomic read-modify-write loses nothing.
    cell = np.zeros(1, "l")
    for _ in range(ROUNDS // 4):
        win.Lock(0, MPI.LOCK_EXCLUSIVE)
        win.Get(cell, 0, 1)
        win.Flush(0)
        cell += 1
        win.Put(cell, 0, 1)
        win.Unlock(0)
    win.Fence()
    everyone = sum(world.allgather(seen), [])
    assert sorted(everyone) == list(range(ROUNDS * size)), "lost or duplicated increments"
    if rank == 0:
        assert counter[0] == ROUNDS * size, counter
        assert counter[1] == (ROUNDS // 4) * size, counter
    # Compare_and_swap: exactly one rank swaps -1 for its rank.
    if rank == 0:
        counter[0] = -1
    win.Fence()
    res = np.zeros(1, "l")
    win.Lock(0, MPI.LOCK_SHARED)
    win.Compare_and_swap(np.array([rank], "l"), np.array([-1], "l"), res, 0, 0)
    win.Unlock(0)
    wins = world.allgather(int(res[0]) == -1)
    assert wins.count(True) == 1, wins
    # Out of range: refused, and the memory after the window is untouched.
    try:
        win.Lock(0, MPI.LOCK_SHARED)
        win.Put(np.zeros(3, "l"), 0, 0)
    except MPI.Exception as e:
        assert e.Get_error_class() == MPI.ERR_RMA_RANGE, e
    else:
        raise AssertionError("a Put past the window's end was accepted")
    finally:
        win.Unlock(0)
    win.Free()

    # General active target around the ring: post to the left neighbour,
    # start towards the right one.
    buf = np.zeros(1, "i")
    win = MPI.Win.Create(buf, 4, MPI.INFO_NULL, world)
    group = world.Get_group()
    for round_ in range(3):
        to_left = group.Incl([left])
        to_right = group.Incl([right])
        win.Post(to_left)
        win.Start(to_right)
        win.Put(np.array([rank * 10 + round_], "i"), right)
        win.Complete()
        win.Wait()
        assert buf[0] == left * 10 + round_, buf
        to_left.Free()
        to_right.Free()
    group.Free()
    win.Free()

    # util.sync on top.
    c = sync.Counter(comm=world)
    mine = [next(c) for _ in range(5)]
    everyone = sum(world.allgather(mine), [])
    assert sorted(everyone) == list(range(5 * size))
    c.free()
    m = sync.Mutex(comm=world)
    c = sync.Counter(comm=world)
    with m:
        run = [next(c) for _ in range(4)]
    assert run == list(range(run[0], run[0] + 4)), run
    c.free()
    m.free()

    world.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)
