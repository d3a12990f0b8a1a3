"""Persistent collectives (MPI-4.1 §6.13, §7.8) (an MPI program).

Run under mpiexec at any world size; every rank prints
"OK test_coll_persistent.py rank r".

* A persistent collective restarts: several Start/Wait (and Start/Test)
  cycles, each sending what the buffers hold at its start.
* Startall starts several persistent collectives at once; they complete
  in any waiting order.
* An inactive persistent collective can be freed, before its first start
  or after a completion; starting an active one is an error.
* A non-contiguous datatype: each completion unpacks into the user's
  buffer, leaving the gaps alone.
* Neighbourhood and intercommunicator persistent collectives restart too.
"""

import os

import numpy as np

if __name__ == "__main__":
    from oxmpi import MPI

    NAME = os.path.basename(__file__)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    CYCLES = 4

    # Restart: Allreduce with new send data at each cycle.
    send = np.zeros(3, "i")
    recv = np.zeros(3, "i")
    req = world.Allreduce_init(send, recv, MPI.SUM)
    assert isinstance(req, MPI.Prequest)
    assert req.Test()  # inactive: Test completes at once...
    assert req != MPI.REQUEST_NULL  # ...and leaves it usable
    for cycle in range(CYCLES):
        send[:] = [rank + cycle, 1, cycle]
        req.Start()
        req.Wait()
        total = sum(range(size)) + size * cycle
        assert list(recv) == [total, size, size * cycle], (cycle, recv)
    # Start, then poll with Test.
    send[:] = [1, 2, 3]
    req.Start()
    while not req.Test():
        pass
    assert list(recv) == [size, 2 * size, 3 * size]
    req.Free()
    assert req == MPI.REQUEST_NULL

    # Restart of a rooted collective, the root moving with the cycle.
    for cycle in range(CYCLES):
        root = cycle % size
        buf = np.full(5, -1, "d")
        out = np.zeros(5 * size, "d") if rank == root else None
        g = world.Gather_init(buf, out, root=root, info=MPI.INFO_NULL)
        for again in range(2):
            buf[:] = rank * 10 + again
            g.Start()
            g.Wait()
            if rank == root:
                want = np.repeat(np.arange(size) * 10 + again, 5)
                assert np.array_equal(out, want), (cycle, again, out)
        g.Free()

    # Startall over several persistent collectives, completed in reverse.
    info = MPI.Info.Create()
    info.Set("mpi_assert_no_any_source", "true")  # a hint, free to ignore
    a_send, a_recv = np.zeros(2, "l"), np.zeros(2, "l")
    b_buf = np.zeros(4, "f")
    g_send, g_recv = np.zeros(1, "i"), np.zeros(size, "i")
    s_recv = np.zeros(1, "i")
    reqs = [
        world.Barrier_init(),
        world.Allreduce_init(a_send, a_recv, op=MPI.MAX, info=info),
        world.Bcast_init(b_buf, root=size - 1),
        world.Allgather_init(g_send, g_recv),
        world.Scan_init(g_send, s_recv),
    ]
    info.Free()
    for cycle in range(CYCLES):
        a_send[:] = [rank, -rank - cycle]
        if rank == size - 1:
            b_buf[:] = cycle + 0.5
        g_send[0] = rank * rank + cycle
        MPI.Prequest.Startall(reqs)
        try:
            reqs[1].Start()  # already active
        except MPI.Exception as e:
            assert e.Get_error_class() == MPI.ERR_REQUEST, e
        else:
            raise AssertionError("starting an active request must fail")
        MPI.Request.Waitall(reqs[::-1])
        assert list(a_recv) == [size - 1, -cycle]
        assert np.all(b_buf == cycle + 0.5)
        assert list(g_recv) == [r * r + cycle for r in range(size)]
        assert s_recv[0] == sum(r * r + cycle for r in range(rank + 1))
    for r in reqs:
        r.Free()
        assert r == MPI.REQUEST_NULL

    # Free before the first start: nothing was ever started on any rank.
    never = world.Alltoall_init(np.zeros(size, "i"), np.zeros(size, "i"))
    never.Free()
    assert never == MPI.REQUEST_NULL

    # A non-contiguous datatype: every other element of six (resized to
    # six elements, so that consecutive blocks do not interleave).
    vector = MPI.INT.Create_vector(3, 1, 2)
    every_other = vector.Create_resized(0, 6 * MPI.INT.Get_size()).Commit()
    vector.Free()
    gaps = np.full(6, -7, "i")
    bc = world.Bcast_init([gaps, 1, every_other], root=0)
    full = np.full(6 * size, -7, "i")
    ag = world.Allgather_init([gaps, 1, every_other], [full, 1, every_other])
    for cycle in range(CYCLES):
        if rank == 0:
            gaps[0::2] = [cycle, cycle + 1, cycle + 2]
        bc.Start()
        bc.Wait()
        assert list(gaps) == [cycle, -7, cycle + 1, -7, cycle + 2, -7], (cycle, gaps)
        gaps[0::2] += rank
        ag.Start()
        ag.Wait()
        for r in range(size):
            block = full[6 * r : 6 * r + 6]
            want = [cycle + r, -7, cycle + 1 + r, -7, cycle + 2 + r, -7]
            assert list(block) == want, (cycle, r, block)
    bc.Free()
    ag.Free()
    every_other.Free()

    # Reduce in place at the root, restarted.
    for cycle in range(2):
        val = np.array([rank + cycle], "i")
        if rank == 0:
            red = world.Reduce_init(MPI.IN_PLACE, val, op=MPI.SUM, root=0)
        else:
            red = world.Reduce_init(val, None, op=MPI.SUM, root=0)
        for again in range(3):
            val[0] = rank + cycle + again
            red.Start()
            red.Wait()
            if rank == 0:
                assert val[0] == sum(range(size)) + size * (cycle + again)
        red.Free()

    # Neighbourhood: a periodic ring, restarted.
    ring = world.Create_cart([size], periods=[True])
    src, dst = ring.Shift(0, 1)
    nsend = np.zeros(2, "i")
    nrecv = np.full(2, -1, "i")
    nb = ring.Neighbor_alltoall_init(nsend, nrecv)
    for cycle in range(CYCLES):
        nsend[:] = [rank * 100 + cycle, -(rank * 100 + cycle)]
        nb.Start()
        nb.Wait()
        # nrecv[0] from the lower neighbour (its block for its upper one).
        assert nrecv[0] == -(src * 100 + cycle) and nrecv[1] == dst * 100 + cycle, (
            cycle,
            nrecv,
        )
    nb.Free()
    ring.Free()

    # Intercommunicator: the even and the odd ranks.
    if size >= 2:
        color = rank % 2
        local = world.Split(color, rank)
        inter = local.Create_intercomm(0, world, 1 - color, tag=11)
        lrank = local.Get_rank()
        rsize = inter.Get_remote_size()
        isend = np.zeros(1, "i")
        irecv = np.zeros(1, "i")
        ar = inter.Allreduce_init(isend, irecv, MPI.SUM)
        if color == 0:
            root = MPI.ROOT if lrank == 0 else MPI.PROC_NULL
        else:
            root = 0
        ibuf = np.zeros(3, "i")
        ib = inter.Bcast_init(ibuf, root=root)
        for cycle in range(CYCLES):
            isend[0] = rank + cycle
            if color == 0 and lrank == 0:
                ibuf[:] = cycle
            MPI.Prequest.Startall([ar, ib])
            MPI.Request.Waitall([ar, ib])
            remote = [r for r in range(size) if r % 2 != color]
            assert irecv[0] == sum(remote) + rsize * cycle, (cycle, irecv)
            if color == 1:
                assert np.all(ibuf == cycle), (cycle, ibuf)
        ar.Free()
        ib.Free()
        inter.Free()
        local.Free()

    world.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)
