"""Seed 003's mpi4py cheat sheet, every call exercised and checked.

    mpiexec -n 3 python examples/cheatsheet.py      (any size >= 2)

Unchanged mpi4py code: oxmpi's launcher serves `mpi4py` from oxmpi.
"""
import numpy
from mpi4py import MPI

comm = MPI.COMM_WORLD
size = comm.Get_size()
rank = comm.Get_rank()
assert size >= 2, "run with at least 2 ranks"

# -- point-to-point: send/recv ---------------------------------------------
if rank == 0:
    data = {"a": 7, "b": 3.14}
    comm.send(data, dest=1, tag=11)
elif rank == 1:
    data = comm.recv(source=0, tag=11)
    assert data == {"a": 7, "b": 3.14}

# numpy arrays, datatype inferred and explicit
if rank == 0:
    data = numpy.arange(1000, dtype="i")
    comm.Send(data, dest=1, tag=13)
    comm.Send([data, MPI.INT], dest=1, tag=77)
elif rank == 1:
    data = numpy.empty(1000, dtype="i")
    comm.Recv(data, source=0, tag=13)
    assert (data == numpy.arange(1000)).all()
    data = numpy.empty(1000, dtype="i")
    comm.Recv([data, MPI.INT], source=0, tag=77)
    assert (data == numpy.arange(1000)).all()

# -- non-blocking ------------------------------------------------------------
if rank == 0:
    req = comm.isend({"x": 1}, dest=1, tag=11)
    req.wait()
elif rank == 1:
    req = comm.irecv(source=0, tag=11)
    assert req.wait() == {"x": 1}

# waitall: rank 0 receives one message from every other rank
if rank == 0:
    reqs = [comm.irecv(source=src, tag=11) for src in range(1, size)]
    got = MPI.Request.waitall(reqs)
    assert got == [f"hello from {src}" for src in range(1, size)], got
else:
    comm.send(f"hello from {rank}", dest=0, tag=11)

# -- collectives ----------------------------------------------------------------
data = comm.bcast({"key1": [7, 2.72, 2 + 3j], "key2": ("abc", "xyz")} if rank == 0 else None, root=0)
assert data["key2"] == ("abc", "xyz")

data = comm.scatter([(i + 1) ** 2 for i in range(size)] if rank == 0 else None, root=0)
assert data == (rank + 1) ** 2

data = comm.gather((rank + 1) ** 2, root=0)
if rank == 0:
    assert data == [(i + 1) ** 2 for i in range(size)]

# Scatterv: rank i gets i + 1 values
counts = [i + 1 for i in range(size)]
displs = [sum(counts[:i]) for i in range(size)]
sendbuf = numpy.arange(sum(counts), dtype="d") if rank == 0 else None
recvbuf = numpy.empty(counts[rank], dtype="d")
comm.Scatterv([sendbuf, (counts, displs), MPI.DOUBLE] if rank == 0 else None, recvbuf, root=0)
assert (recvbuf == numpy.arange(displs[rank], displs[rank] + counts[rank])).all()

buf = numpy.arange(100, dtype="i") if rank == 0 else numpy.empty(100, dtype="i")
comm.Bcast(buf, root=0)
assert (buf == numpy.arange(100)).all()

sendbuf = numpy.empty([size, 100], dtype="i") if rank == 0 else None
if rank == 0:
    sendbuf.T[:, :] = range(size)
recvbuf = numpy.empty(100, dtype="i")
comm.Scatter(sendbuf, recvbuf, root=0)
assert (recvbuf == rank).all()

sendbuf = numpy.zeros(100, dtype="i") + rank
recvbuf = numpy.empty([size, 100], dtype="i") if rank == 0 else None
comm.Gather(sendbuf, recvbuf, root=0)
if rank == 0:
    for i in range(size):
        assert (recvbuf[i, :] == i).all()

x = numpy.full(3, float(rank))
xg = numpy.empty(3 * size)
comm.Allgather([x, MPI.DOUBLE], [xg, MPI.DOUBLE])
assert (xg == numpy.repeat(numpy.arange(size, dtype=float), 3)).all()

comm.Barrier()
print(f"cheatsheet ok on rank {rank} of {size}", flush=True)
