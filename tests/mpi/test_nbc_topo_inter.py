"""Nonblocking reductions with Python operations, neighbourhood collectives,
intercommunicators and Comm.Create (an MPI program).

Run under mpiexec at any world size; every rank prints
"OK test_nbc_topo_inter.py rank r".

* Nonblocking reductions with a Python operation complete under a Test loop
  (the GIL held between tests) while an object receive is pending; an
  operation that raises does not hang the job.
* Zero-length nonblocking collectives (on some MPI libraries the address
  of an empty buffer means MPI_IN_PLACE).
* Neighbour collectives see each block in its neighbour's slot: on a
  periodic ring of extent 1 or 2 both neighbours are one process, and the
  block sent towards -1 must land in the +1 slot of the receiver.
* Weighted distributed graphs keep their weights; duplicates their topology.
* Intercommunicators: Create_intercomm, a collective, Create, Merge.
"""

import os

import numpy as np

if __name__ == "__main__":
    from oxmpi import MPI

    NAME = os.path.basename(__file__)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    left, right = (rank - 1) % size, (rank + 1) % size

    def add_i4(a, b, dt):
        y = np.frombuffer(b, dtype="i4")
        y += np.frombuffer(a, dtype="i4")

    add = MPI.Op.Create(add_i4, commute=True)
    pending = world.irecv(source=left, tag=77)
    mine = np.full(4, rank + 1, dtype="i4")
    everywhere, at_root = np.zeros(4, "i4"), np.zeros(4, "i4")
    reqs = [world.Iallreduce(mine, everywhere, op=add), world.Ireduce(mine, at_root, op=add, root=0)]
    while not MPI.Request.Testall(reqs):
        pass
    total = size * (size + 1) // 2
    assert (everywhere == total).all(), everywhere
    assert rank != 0 or (at_root == total).all(), at_root
    world.send(("hi", rank), dest=right, tag=77)
    assert pending.wait() == ("hi", left)

    def boom(a, b, dt):
        raise ValueError("boom")

    failing = MPI.Op.Create(boom, commute=True)
    try:
        world.Iallreduce(mine, everywhere, op=failing).Wait()
    except ValueError:
        pass  # raised where the operation ran
    add.Free()
    failing.Free()
    world.Barrier()

    empty = np.zeros(0, "i4")
    world.Iallgather(empty, np.zeros(0, "i4")).Wait()
    world.Ialltoall(empty, np.zeros(0, "i4")).Wait()
    world.Igather(empty, np.zeros(0, "i4") if rank == 0 else None, root=0).Wait()
    world.Ibcast(empty, root=0).Wait()
    world.Iallreduce(empty, np.zeros(0, "i4"), op=MPI.SUM).Wait()

    ring = world.Create_cart([size], periods=[True])
    blocks = np.array([rank * 10, rank * 10 + 1], "i4")
    for nonblocking in (False, True):
        got = np.zeros(2, "i4")
        if nonblocking:
            ring.Ineighbor_alltoall(blocks, got).Wait()
        else:
            ring.Neighbor_alltoall(blocks, got)
        assert got.tolist() == [left * 10 + 1, right * 10], (nonblocking, got)
    assert ring.neighbor_alltoall([("to-left", rank), ("to-right", rank)]) == [
        ("to-right", left),
        ("to-left", right),
    ]
    ring.Free()

    graph = world.Create_dist_graph_adjacent([left], [right], sourceweights=[5], destweights=[7])
    assert graph.Get_dist_neighbors() == ([left], [right], ([5], [7]))
    got = np.zeros(1, "i4")
    graph.Neighbor_alltoall(np.array([rank], "i4"), got)
    assert got[0] == left
    dup = graph.Dup()
    assert dup.Get_topology() == MPI.DIST_GRAPH
    assert dup.neighbor_allgather(rank * 10) == [left * 10]
    dup.Free()
    graph.Free()

    if size >= 2:
        color = rank % 2
        local = world.Split(color, rank)
        inter = local.Create_intercomm(0, world, 1 - color, tag=5)
        assert inter.Is_inter()
        assert inter.Get_remote_size() == (size // 2 if color == 0 else (size + 1) // 2)
        if color == 0:
            root = MPI.ROOT if local.rank == 0 else MPI.PROC_NULL
        else:
            root = 0
        got = inter.bcast("from group 0" if rank == 0 else None, root=root)
        assert color == 0 or got == "from group 0"
        try:
            sub = inter.Create(inter.Get_group())
        except NotImplementedError:
            sub = None  # the native runtime has no Create on intercommunicators
        assert sub is None or (sub.Is_inter() and sub.Get_remote_size() == inter.Get_remote_size())
        merged = inter.Merge(high=bool(color))
        assert merged.Get_size() == size
        assert merged.allreduce(1) == size
        for c in (sub, merged, inter, local):
            if c is not None:
                c.Free()

    first = world.Get_group().Incl([0])
    alone = world.Create(first)
    assert (alone == MPI.COMM_NULL) == (rank != 0)
    if rank == 0:
        same = world.Create_group(first, tag=3)
        assert same.Get_size() == 1
        same.Free()
        alone.Free()
    first.Free()

    print(f"OK {NAME} rank {rank}", flush=True)
