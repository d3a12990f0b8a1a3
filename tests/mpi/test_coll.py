"""Collective operations, object and buffer flavours, and new communicators.

Run under mpiexec at any world size; every rank prints
"OK test_coll.py rank r".
"""

import math
import os
import time

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
world = MPI.COMM_WORLD
WHERE = f"[{NAME} rank {world.Get_rank()}/{world.Get_size()}]"

OPS = {
    "SUM": (MPI.SUM, lambda xs: sum(xs[1:], xs[0])),
    "PROD": (MPI.PROD, lambda xs: math.prod(xs[1:], start=xs[0])),
    "MIN": (MPI.MIN, lambda xs: np.minimum.reduce(xs)),
    "MAX": (MPI.MAX, lambda xs: np.maximum.reduce(xs)),
}


def contribution(dtype, r, n=17):
    """Rank r's input: small values (PROD stays exact), mixed signs."""
    i = np.arange(n)
    if np.dtype(dtype).kind == "f":
        return (((i + 2 * r) % 5) - 2 + 0.5 * (r % 2)).astype(dtype)
    return (((i * 3 + r) % 7) - 3).astype(dtype)


def test_barrier(comm):
    # Many in a row: a message lost between consecutive barriers hangs here.
    for _ in range(2000):
        comm.Barrier()
    comm.barrier()
    # Barrier really synchronises: nobody leaves before the last one enters.
    rank, size = comm.rank, comm.size
    if size > 1:
        if rank == size - 1:
            time.sleep(0.5)
        t = MPI.Wtime()
        comm.Barrier()
        waited = MPI.Wtime() - t
        if rank != size - 1:
            assert waited >= 0.25, f"{WHERE} left a barrier after {waited:.3f} s while the last rank slept 0.5 s"


def test_bcast(comm):
    rank, size = comm.rank, comm.size
    for root in range(size):
        obj = {"root": root, "items": list(range(root + 3)), "arr": np.arange(root + 1)} if rank == root else None
        got = comm.bcast(obj, root=root)
        assert got["root"] == root and got["items"] == list(range(root + 3)), f"{WHERE} bcast from {root}: {got!r}"
        assert np.array_equal(got["arr"], np.arange(root + 1)), WHERE
        # A large object (rendezvous sizes).
        big = ("x" * 300_000 + str(root)) if rank == root else None
        got = comm.bcast(big, root=root)
        assert len(got) == 300_000 + len(str(root)) and got.endswith(str(root)), f"{WHERE} large bcast from {root}"
        for dtype in (np.int32, np.float64, np.complex128):
            buf = (np.arange(100, dtype=dtype) * (root + 1)) if rank == root else np.zeros(100, dtype=dtype)
            comm.Bcast(buf, root=root)
            assert np.array_equal(buf, np.arange(100, dtype=dtype) * (root + 1)), f"{WHERE} Bcast {dtype.__name__} from {root}: {buf[:5]}"
        buf = np.full(1 << 20, root, dtype=np.uint8) if rank == root else np.zeros(1 << 20, dtype=np.uint8)
        comm.Bcast([buf, MPI.BYTE], root=root)
        assert (buf == root).all(), f"{WHERE} 1 MiB Bcast from {root}"
    assert comm.bcast(None, root=0) is None, WHERE


def test_reduce(comm):
    rank, size = comm.rank, comm.size
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        inputs = [contribution(dtype, r) for r in range(size)]
        mine = inputs[rank]
        for opname, (op, fold) in OPS.items():
            want = np.asarray(fold(inputs), dtype=dtype)
            tag = f"{opname} on {np.dtype(dtype).name}"
            # Allreduce / allreduce.
            out = np.zeros_like(mine)
            comm.Allreduce(mine, out, op=op)
            assert np.array_equal(out, want), f"{WHERE} Allreduce {tag}: {out} != {want}"
            # Object flavour on arrays: SUM and PROD only (mpi4py's object
            # MIN/MAX compare whole objects, ambiguous for arrays).
            obj_op = opname in ("SUM", "PROD")
            if obj_op:
                got = comm.allreduce(mine, op=op)
                assert np.array_equal(got, want), f"{WHERE} allreduce {tag}: {got} != {want}"
            # IN_PLACE Allreduce.
            inplace = mine.copy()
            comm.Allreduce(MPI.IN_PLACE, inplace, op=op)
            assert np.array_equal(inplace, want), f"{WHERE} IN_PLACE Allreduce {tag}: {inplace} != {want}"
            # Reduce / reduce to every root.
            for root in range(size):
                out = np.full_like(mine, 99)
                comm.Reduce(mine, out if rank == root else None, op=op, root=root)
                if rank == root:
                    assert np.array_equal(out, want), f"{WHERE} Reduce {tag} to {root}: {out} != {want}"
                got = comm.reduce(mine if obj_op else float(mine.sum()), op=op, root=root)
                want_obj = want if obj_op else fold([float(x.sum()) for x in inputs])
                if rank == root:
                    assert np.array_equal(got, want_obj), f"{WHERE} reduce {tag} to {root}: {got} != {want_obj}"
                else:
                    assert got is None, f"{WHERE} reduce to {root} returned {got!r} on a non-root"
                # IN_PLACE Reduce at the root.
                if rank == root:
                    inplace = mine.copy()
                    comm.Reduce(MPI.IN_PLACE, inplace, op=op, root=root)
                    assert np.array_equal(inplace, want), f"{WHERE} IN_PLACE Reduce {tag} at {root}"
                else:
                    comm.Reduce(mine, None, op=op, root=root)
    # Scalars and the default op (SUM).
    assert comm.allreduce(rank) == size * (size - 1) // 2, WHERE
    assert comm.allreduce(rank + 1, op=MPI.PROD) == math.factorial(size), WHERE
    assert comm.allreduce(rank, op=MPI.MAX) == size - 1 and comm.allreduce(rank, op=MPI.MIN) == 0, WHERE
    assert comm.allreduce(float(rank) / 2, op=MPI.SUM) == sum(r / 2 for r in range(size)), WHERE
    for root in range(size):
        got = comm.reduce(rank * 10, op=MPI.SUM, root=root)
        assert got == (10 * size * (size - 1) // 2 if rank == root else None), f"{WHERE} reduce scalar to {root}: {got!r}"
    # Explicit [buf, type] specs.
    out = np.zeros(3)
    comm.Allreduce([np.full(3, float(rank)), MPI.DOUBLE], [out, MPI.DOUBLE], op=MPI.SUM)
    assert (out == size * (size - 1) / 2).all(), f"{WHERE} Allreduce [buf, DOUBLE]: {out}"
    # A large Allreduce.
    big = np.full(1 << 18, rank + 1, dtype=np.float64)
    out = np.empty_like(big)
    comm.Allreduce(big, out, op=MPI.SUM)
    assert (out == size * (size + 1) / 2).all(), f"{WHERE} large Allreduce"


def small_values(code, r, n=9):
    """Rank r's input of type `code`, small enough that PROD over 5 ranks
    stays exact and in range even for 8-bit types."""
    i = np.arange(n)
    if code in "FD":
        return ((i % 3) - 1 + 1j * ((i + r) % 2)).astype(code)
    if code in "BHILQ":
        return ((i * 3 + r) % 4).astype(code)
    return (((i * 3 + r) % 5) - 2).astype(code)


def test_reduce_dtypes(comm):
    """Allreduce and Reduce on every numeric type mpi4py maps from numpy."""
    rank, size = comm.rank, comm.size
    for code in "bhilqBHILQfdFD":
        inputs = [small_values(code, r) for r in range(size)]
        for opname, (op, fold) in OPS.items():
            if code in "FD" and opname in ("MIN", "MAX"):
                continue  # MPI defines no order on complex numbers
            want = np.asarray(fold(inputs)).astype(code)
            out = np.zeros_like(inputs[rank])
            comm.Allreduce(inputs[rank], out, op=op)
            assert np.array_equal(out, want), f"{WHERE} Allreduce {opname} on {code!r}: {out} != {want}"
            root = size - 1
            out = np.zeros_like(inputs[rank]) if rank == root else None
            comm.Reduce(inputs[rank], out, op=op, root=root)
            if rank == root:
                assert np.array_equal(out, want), f"{WHERE} Reduce {opname} on {code!r}: {out} != {want}"


def test_gather_scatter(comm):
    rank, size = comm.rank, comm.size
    for root in range(size):
        # objects
        got = comm.gather({"r": rank, "sq": rank * rank}, root=root)
        if rank == root:
            assert got == [{"r": r, "sq": r * r} for r in range(size)], f"{WHERE} gather to {root}: {got!r}"
        else:
            assert got is None, f"{WHERE} gather to {root} returned {got!r} on a non-root"
        items = [("item", root, r) for r in range(size)] if rank == root else None
        got = comm.scatter(items, root=root)
        assert got == ("item", root, rank), f"{WHERE} scatter from {root}: {got!r}"
        # buffers: 3 ints per rank
        send = np.arange(3, dtype=np.int32) + 10 * rank
        recv = np.full(3 * size, -1, dtype=np.int32) if rank == root else None
        comm.Gather(send, recv, root=root)
        if rank == root:
            want = np.concatenate([np.arange(3) + 10 * r for r in range(size)])
            assert np.array_equal(recv, want), f"{WHERE} Gather to {root}: {recv}"
        sendall = (np.arange(4 * size, dtype=np.float64) + root) if rank == root else None
        mine = np.full(4, -1.0)
        comm.Scatter(sendall, mine, root=root)
        assert np.array_equal(mine, np.arange(4 * rank, 4 * rank + 4) + root), f"{WHERE} Scatter from {root}: {mine}"
        # IN_PLACE at the root: Gather takes the root's block from recvbuf,
        # Scatter leaves the root's block where it is in sendbuf.
        if rank == root:
            recv = np.full(3 * size, -1, dtype=np.int32)
            recv[3 * root : 3 * root + 3] = np.arange(3) + 10 * root
            comm.Gather(MPI.IN_PLACE, recv, root=root)
            want = np.concatenate([np.arange(3) + 10 * r for r in range(size)])
            assert np.array_equal(recv, want), f"{WHERE} IN_PLACE Gather at {root}: {recv}"
            sendall = np.arange(2 * size, dtype=np.int64) * 7
            comm.Scatter(sendall, MPI.IN_PLACE, root=root)
            assert np.array_equal(sendall, np.arange(2 * size) * 7), f"{WHERE} IN_PLACE Scatter changed the root's data"
        else:
            comm.Gather(np.arange(3, dtype=np.int32) + 10 * rank, None, root=root)
            mine = np.zeros(2, dtype=np.int64)
            comm.Scatter(None, mine, root=root)
            assert np.array_equal(mine, np.arange(2 * rank, 2 * rank + 2) * 7), f"{WHERE} Scatter (root IN_PLACE) from {root}: {mine}"
    # IN_PLACE Allgather and Alltoall.
    buf = np.full(2 * size, -1.0)
    buf[2 * rank : 2 * rank + 2] = [rank, rank + 0.5]
    comm.Allgather(MPI.IN_PLACE, buf)
    assert np.array_equal(buf, np.array([[r, r + 0.5] for r in range(size)]).ravel()), f"{WHERE} IN_PLACE Allgather: {buf}"
    buf = np.array([100 * rank + d for d in range(size)], dtype=np.int32)
    comm.Alltoall(MPI.IN_PLACE, buf)
    assert np.array_equal(buf, np.array([100 * s + rank for s in range(size)])), f"{WHERE} IN_PLACE Alltoall: {buf}"
    # uneven-size objects
    got = comm.allgather("x" * (rank * 1000))
    assert [len(s) for s in got] == [r * 1000 for r in range(size)], f"{WHERE} allgather of uneven strings"
    got = comm.allgather((rank, None))
    assert got == [(r, None) for r in range(size)], f"{WHERE} allgather: {got!r}"
    send = np.array([rank, -rank], dtype=np.int64)
    recv = np.zeros(2 * size, dtype=np.int64)
    comm.Allgather(send, recv)
    assert np.array_equal(recv, np.array([[r, -r] for r in range(size)]).ravel()), f"{WHERE} Allgather: {recv}"
    comm.Allgather([send, MPI.LONG], [recv, MPI.LONG])
    assert np.array_equal(recv, np.array([[r, -r] for r in range(size)]).ravel()), WHERE
    # alltoall
    got = comm.alltoall([(rank, dst) for dst in range(size)])
    assert got == [(src, rank) for src in range(size)], f"{WHERE} alltoall: {got!r}"
    send = np.array([[100 * rank + d, -d] for d in range(size)], dtype=np.int32).ravel()
    recv = np.zeros(2 * size, dtype=np.int32)
    comm.Alltoall(send, recv)
    want = np.array([[100 * s + rank, -rank] for s in range(size)], dtype=np.int32).ravel()
    assert np.array_equal(recv, want), f"{WHERE} Alltoall: {recv} != {want}"


def test_dup_split(comm):
    rank, size = comm.rank, comm.size
    dup = comm.Dup()
    assert isinstance(dup, MPI.Intracomm) and dup != comm, WHERE
    assert dup.rank == rank and dup.size == size, f"{WHERE} Dup is {dup.rank}/{dup.size}"
    assert dup.allreduce(1) == size, WHERE
    # Messages on the duplicate never match receives on the original.
    right, left = (rank + 1) % size, (rank - 1) % size
    r1 = dup.isend("on dup", dest=right, tag=1)
    r2 = comm.isend("on comm", dest=right, tag=1)
    assert comm.recv(source=left, tag=1) == "on comm", f"{WHERE} a message crossed communicators"
    assert dup.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG) == "on dup", WHERE
    r1.wait()
    r2.wait()
    dup2 = dup.Dup()
    assert dup2.bcast("nested dup", root=size - 1) == "nested dup", WHERE
    dup2.Free()
    assert dup2 == MPI.COMM_NULL, f"{WHERE} Free did not make the handle COMM_NULL"
    # Split by parity, keys reversing the order.
    color = rank % 2
    sub = comm.Split(color, -rank)
    members = [r for r in range(size) if r % 2 == color]
    assert sub.size == len(members), f"{WHERE} Split size {sub.size}, want {len(members)}"
    want_rank = sorted(members, reverse=True).index(rank)
    assert sub.rank == want_rank, f"{WHERE} Split rank {sub.rank}, want {want_rank}"
    got = sub.allgather(rank)
    assert got == sorted(members, reverse=True), f"{WHERE} Split members {got}"
    total = np.zeros(1, dtype=np.int64)
    sub.Allreduce(np.array([rank], dtype=np.int64), total, op=MPI.SUM)
    assert total[0] == sum(members), f"{WHERE} Allreduce on Split comm: {total[0]}"
    assert sub.bcast(rank if sub.rank == 0 else None, root=0) == max(members), WHERE
    # Point-to-point inside the split comm.
    if sub.size > 1:
        sr, sl = (sub.rank + 1) % sub.size, (sub.rank - 1) % sub.size
        got = sub.sendrecv(rank, dest=sr, source=sl)
        assert got == sorted(members, reverse=True)[sl], f"{WHERE} sendrecv on Split comm: {got}"
    sub.Barrier()
    # Split with one colour for all and keys in order: same as the original.
    same = comm.Split(0, 0)
    assert same.rank == rank and same.size == size, WHERE
    same.Free()
    # UNDEFINED colour gives COMM_NULL.
    part = comm.Split(MPI.UNDEFINED if rank == 0 else 1, rank)
    if rank == 0:
        assert part == MPI.COMM_NULL, f"{WHERE} Split(UNDEFINED) returned {part!r}"
    else:
        assert part.size == size - 1 and part.rank == rank - 1, f"{WHERE} Split without rank 0: {part.rank}/{part.size}"
        assert part.allreduce(rank) == sum(range(1, size)), WHERE
        part.Free()
    sub.Free()
    dup.Free()


def run_all(comm):
    test_barrier(comm)
    test_bcast(comm)
    test_reduce(comm)
    test_reduce_dtypes(comm)
    test_gather_scatter(comm)
    test_dup_split(comm)


def main():
    run_all(world)
    # The same collectives on a duplicate and on COMM_SELF.
    d = world.Dup()
    run_all(d)
    d.Free()
    test_bcast(MPI.COMM_SELF)
    test_reduce(MPI.COMM_SELF)
    world.Barrier()
    print(f"OK {NAME} rank {world.rank}", flush=True)


if __name__ == "__main__":
    main()
